"""What runs on a worker: chat requests answered with a loaded model, plain data in and out."""
