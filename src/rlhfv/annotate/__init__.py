"""The annotation web app: annotators correct the hallucinated segments of model answers.

* ``db``: tables (users, sessions, tasks, assignments = task locks, submissions) and
  engine setup (SQLite in WAL mode with ``synchronous=FULL``, or any SQLAlchemy URL);
* ``service``: accounts, task locks, idempotent submits, review (no HTTP);
* ``edits``: an annotator's edits -> corrected answer + :class:`ChangedSegment` spans;
* ``store``: the content-addressed image store and the import of model generations;
* ``app``: the FastAPI app and the static browser UI in ``static/``;
* ``export`` / ``stats``: :class:`Correction` records out, statistics and agreement;
* ``commands``: ``rlhfv annotate serve | import | user add | export | stats``.

From the rest of rlhfv it imports only the record schema, the data layer's writers and
the error type: no torch.
"""
