"""What the platform tells its operator without being asked: alerts."""
