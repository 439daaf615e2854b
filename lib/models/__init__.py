"""Model families (a package each) and the reward head they share."""
