"""Studies: end-to-end experiments on real models (python -m pyquant.studies.<name>)."""
