"""SecAgg+ protocol core: sans-IO sessions, parameters and neighbourhood graphs."""
