"""The recognition side: datasets, labels, synthetic renders, networks, training, experiments, inference."""
