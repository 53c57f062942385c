"""unifashion: a unified vision-language model for fashion retrieval, captioning and generation."""

__version__ = "0.1.0"
