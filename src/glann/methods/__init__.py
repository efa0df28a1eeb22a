"""The methods: the registry, the one training loop, models, losses and each method's trainer."""
