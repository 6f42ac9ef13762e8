"""Training recipes, one readable file per method: autoencoder, teacher, scale_distill, decoder."""
