"""HTML pages: one Jinja2 rendering stack (templates shipped with the package) for every report.

Below every zone, like `settings` and `errors`: the quality report (`uprnlink.reports`) and the
IG lead's audit report (`uprnlink.governance`) both render through it.
"""

from markupsafe import Markup

from uprnlink.html.page import Chart, environment, inline_scripts, render_page

__all__ = ["Chart", "Markup", "environment", "inline_scripts", "render_page"]
