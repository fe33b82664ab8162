"""The live service: per collection the shard actors, the one writer and the HTTP query front end."""
