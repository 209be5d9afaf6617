"""Developer tooling: the dev runner (`make up`) and the test command (`make test`)."""
