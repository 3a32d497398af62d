"""The navigation names every domain, each opening its live stack, in one query (issue 17)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.nav import nav_domains
from tests.conftest import person, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


def _nav(html: str) -> str:
    return html.split('<nav class="nav"')[1].split("</nav>")[0]


def test_it_names_every_domain_and_links_its_live_stack(client, viewer):
    nav = _nav(client.get("/oversight/breakers/").content.decode())

    assert '<a href="/loops/domains/depot/">Depot</a>' in nav
    assert '<a href="/loops/domains/lab/">' in nav
    assert 'aria-current="page">Breakers</a>' in nav


def test_it_marks_the_domain_being_shown(client, viewer):
    nav = _nav(client.get("/loops/domains/depot/").content.decode())

    assert '<a href="/loops/domains/depot/" aria-current="page">Depot</a>' in nav


def test_it_costs_one_query():
    with CaptureQueriesContext(connection) as queries:
        domains = nav_domains()

    assert len(queries) == 1 and ("depot", "Depot") in domains


def test_it_names_no_domain_to_a_person_without_a_role():
    client = signed_in(person("nora"))

    response = client.get("/")

    assert response.status_code == 403 and "/loops/domains/" not in response.content.decode()
