// Select every break on the page from the header checkbox.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("all");
  if (!all) return;
  all.addEventListener("change", () => {
    document.querySelectorAll('input[name="ids"]').forEach((box) => { box.checked = all.checked; });
  });
});
