"""Tests of the auditsvc client distribution (clients/)."""
