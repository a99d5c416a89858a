"""What the benchmarks share: starting servers and databases, driving them with wrk, counting
the CPU time they use, and running a bench so that it leaves nothing behind.

- servers: processes on loopback (nginx, granian apps), started and stopped in order
- pixelgate: the server under test, its secret, and what it says about itself (/metrics, log)
- databases: throwaway PostgreSQL databases or SQLite files, seeded with consent
- wrk: one wrk run and its result (bench/lib/wrk_subjects.lua writes it as JSON)
- cpu: CPU seconds of a process tree, of PostgreSQL and of the machine
- profiling: py-spy samples of pixelgate's processes, summarised
- harness: signals, the temp dir and Ctrl-C, as every bench runs
"""
