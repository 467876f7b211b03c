"""`GET /ui`: a page where a person separates a song in the browser, served from installed files."""
