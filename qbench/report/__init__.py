"""Reading the results index: leaderboards (:mod:`.board`), the CI gate (:mod:`.gate`), the
paper's claims (:mod:`.findings`), plots, one run's details (:mod:`.show`), the results page
(:mod:`.results_page`) and JUnit XML (:mod:`.junit`)."""
