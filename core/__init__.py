"""Helpers every layer shares: the error root, the warehouse (open, quote, transact, run ids), strict models, cron.

`core` imports nothing of the project: `cdc`, `masterdata`, `reconcile` and `coexist` build on it.
"""
