"""The RAG-versus-LIFT comparison harness: SQuAD data and scoring, cases, arms, the runner and reports.

A development package of the source tree, next to ``lift_integrations`` and never inside it: the library
does not import it and its wheel does not ship it. ``make install`` (an editable install of the
repository) makes it importable for ``examples/``, ``benchmarks/`` and the tests. Modules import one way:
``squad`` -> ``cases`` -> ``arms`` -> ``compare`` -> ``report``. The corpus setting (many articles as one
knowledge base) builds on them: ``corpus`` -> ``corpus_arms`` -> ``corpus_run`` -> ``corpus_report``.
"""
