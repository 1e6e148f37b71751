"""What `sclora eval` runs on a loaded model: the held-out sets (sets.py), greedy generation and
teacher-forced NLL (generation.py), and the metrics of each set (scoring.py)."""
