"""The classifier: network, focal loss, data feeding, training, thresholds, model artefact."""
