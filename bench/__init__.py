"""``make bench``: what the session layer costs, measured as ratios.

Every figure is a ratio against a baseline measured in the same run on the
same machine (or a count), so the numbers mean the same on any machine:

* ``procs``     the real processes: SecantusDB, the sandboxes, the app (``serve``)
* ``serve``     ``app.py``'s production start plus bench-only pages (``/_bench/...``)
* ``tls``       the sandboxes served over HTTPS with a certificate made for the run
* ``load``      HTTP load with ``wrk`` (a small threaded Python generator if it is missing)
* ``fill``      bulk sessions made by the project's own SessionEngine and Keyring
* ``clients``   pooled vs fresh HTTPS connections through the project's clients
* ``figures``   results.json, the Markdown table, the chart
* ``__main__``  the run, in order

See bench/README.md.
"""
