"""Evaluation: judge-agreement metrics, evaluation-data readers, win rates, task-world metrics and the run report."""
