"""Writes a fuzz target's seed corpus: the make_*_corpus.py scripts beside this file share it."""

import os


def write_corpus(out_dir, seeds):
    """Makes out_dir hold exactly `seeds` (name -> bytes): files the list no longer names go."""
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        if name not in seeds:
            os.remove(os.path.join(out_dir, name))
    for name, data in seeds.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {out_dir}")
