"""The optimizer lab's renderer: figures and report.html from the data files
that `optim lab` writes (summary.json and CSV files).

    /usr/bin/python3 -m optim.lab.render <run directory>

The C program runs it at the end of a run; `optim lab render <dir>` runs it
again. It needs matplotlib and numpy, and does not need liboptim itself.
"""
