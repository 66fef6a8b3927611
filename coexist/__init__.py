"""coexist: keeps a legacy ERP and a PSA in step during a cloud-ERP migration."""
