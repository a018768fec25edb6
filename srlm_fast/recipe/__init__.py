"""The self-rewarding recipe: the loop driver and its stages, the policy, judge, pairs, self-instruct, seed data,
EFT and the task world."""
