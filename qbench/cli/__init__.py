"""The `qbench` command: the main verbs (:mod:`.main`), `qbench data` and `qbench quant`."""
