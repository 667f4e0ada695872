"""Social data: tag mapping, the follow graph and voting that turns playlist tags into labels."""
