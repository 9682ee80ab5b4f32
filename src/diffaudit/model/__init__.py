"""The model under audit: text encoder, pipeline, training and sampling."""
