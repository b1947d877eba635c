"""Ablations: train a list of pretraining variants with everything else fixed and compare them, by
their own validation and, with `--pairs`, downstream by fine-tuning each into a separator. The one
folder above both jobs: it runs pretraining and separation and so imports both."""
