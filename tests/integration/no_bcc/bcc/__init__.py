# Put first on PYTHONPATH by tests: makes `import bcc` fail as on a host without BCC.
raise ImportError("bcc hidden by xdpfwd's tests")
