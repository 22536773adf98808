"""Self-contained HTML reports: ``report.html`` beside every evaluation's ``metrics.json``
(:mod:`parsenet.html.evaluation_report`) and an ablation's ``table.html``
(:mod:`parsenet.html.ablation_report`), built from the Jinja2 templates in ``templates/`` with
the pieces both share (:mod:`parsenet.html.page`): styles inline, pictures as ``data:`` URIs, no
script and nothing fetched from the network, so a page opens offline as one file."""
