"""Running suites: the training loop (:mod:`.engine`), one run and its outcome (:mod:`.runner`),
a suite's runs in order or in parallel (:mod:`.suite`), on a cluster (:mod:`.launch`), and
data-parallel training under torchrun (:mod:`.distributed`)."""
