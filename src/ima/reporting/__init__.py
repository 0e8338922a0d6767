"""Reporting: tables (:mod:`.tables`, the layout of the paper's Tables 1-3 and 10-15),
figures (:mod:`.figures`, matplotlib) and the HTML page (:mod:`.html`). They read results,
metrics and arrays; they never run a model's attack (the adversarial images a figure
shows come from :mod:`ima.evaluation.examples`)."""
