"""The embedded synthetic catalogue: attribute vocabulary, renderer, captions in three styles,
CIR triplets, worn views for design and try-on, and contact sheets."""
