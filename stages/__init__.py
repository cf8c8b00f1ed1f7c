"""One thin Click command per DVC stage: read and validate params, call trainlab, write outputs."""
