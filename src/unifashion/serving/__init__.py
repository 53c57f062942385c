"""Serving: the HTTP service (FastAPI) and its web page over a :class:`unifashion.pipelines.SearchPipeline`."""
