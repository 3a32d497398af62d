"""The oversight pages (issue 6), one module per page: thin views that call one service
each (STYLE.md B.5); oversight/urls.py gathers their urlpatterns."""
