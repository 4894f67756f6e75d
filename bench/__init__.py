"""Side-by-side benchmark of codex_bot's stream processor and flood control: ``python -m bench``.

Every contender runs in a subprocess of its own (``python -m bench.<module> ...`` prints one
JSON line), so garbage and allocator state of one run never distort the next and the memory
scenario starts from a clean process. ``bench.__main__`` starts a throwaway redis-server,
fills the streams, runs the contenders one after another, prints the table and writes
``bench/results.json``.
"""
