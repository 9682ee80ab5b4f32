"""Reports: they read result files (findings.json for every test and pooled rate) and never compute."""
