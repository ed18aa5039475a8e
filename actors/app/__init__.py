"""The process: `Service` (the composition root that wires the actors), the command
line, the web server and dashboard child process, the worker pool, demo mode.

The only package that may use every other one (`web` included).
"""
