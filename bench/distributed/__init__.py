"""torch.distributed plumbing: process-group setup per rank and the elastic launcher."""
