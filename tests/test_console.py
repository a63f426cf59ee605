"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
against the real API (gunicorn, started by the orchestrator) in front of an orchestrator on its
embedded astara-sim: the table lists the routers, a killed appliance's row turns to rebuilding
and back without a reload, a rebuild clicked in the page boots a new VM and shows in the
router's history with its reason, and without the token the page asks for one and the API
refuses the action.

``ASTARA_SCREENSHOTS=1`` also saves ``docs/console-fleet.png`` and ``docs/console-router.png``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from astara_actors.config.loader import load_config
from astara_actors.daemon import Service
from astara_actors.testing import free_port
from astara_actors.testing.browser import chromium, chromium_missing
from astara_actors.testing.services import unavailable
from astara_actors.testing.sim import PASSWORD, password_token
from astara_actors.testing.sim_process import demo_ini
from astara_actors.testing.waiting import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.services  # the API's gunicorn and a browser are processes

WAIT = 60.0  # a bound for VMs that boot and routers that settle on a loaded machine
TOKEN = "console-test-token-0123456789"
DOCS = Path(__file__).resolve().parent.parent / "docs"
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class Console:
    """The orchestrator with its simulator and its API, as the page sees them."""

    base: str
    sim: str
    service: Service

    def routers(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.base}/routers", headers=AUTH, timeout=WAIT)
        answer.raise_for_status()
        return list(answer.json()["routers"])

    def boots(self, router_id: str) -> int:
        return int(
            requests.get(f"{self.sim}/sim/routers/{router_id}", timeout=WAIT).json()["boots"]
        )


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    ini = demo_ini(tmp, host="console-test")
    text = ini.read_text().replace(
        "[api]\nenabled = false\n",
        f"[api]\nlisten = 127.0.0.1\nport = {port}\nworkers = 2\nauth_token = {TOKEN}\n"
        # Keystone beside the static token: the embedded simulator's Keystone checks the tokens.
        "auth_strategy = keystone\n",
    )
    # Keystone beside the token needs the simulator's Keystone at a known address
    text = text.replace("[sim]\nport = 0\n", f"[sim]\nport = {free_port()}\n")
    ini.write_text(text.replace("routers_per_tenant = 1", "routers_per_tenant = 2"))
    service = Service(load_config(ini)).start()
    try:
        assert service.sim is not None
        found = Console(f"http://127.0.0.1:{port}", service.sim.url, service)
        wait_for(
            lambda: _all_configured(found, 4),
            lambda: f"4 configured routers: {_states(found)}",
            timeout=WAIT,
        )
        yield found
    finally:
        service.stop()


def _states(console: Console) -> list[str]:
    try:
        return [r.get("instance_state", "?") for r in console.routers()]
    except requests.RequestException as exc:
        return [f"API: {exc}"]


def _all_configured(console: Console, count: int) -> bool:
    states = _states(console)
    return len(states) == count and all(s == "configured" for s in states)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = chromium_missing()
    if reason:
        unavailable(reason)
    with chromium() as started:
        yield started


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # a fresh sessionStorage per test
    opened = context.new_page()
    opened.set_default_timeout(WAIT * 1000)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"the page's scripts failed: {errors}"


def sign_in(page: Page, console: Console, token: str = TOKEN, scheme: str = "bearer") -> None:
    from playwright.sync_api import expect

    page.goto(f"{console.base}/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", token)
    page.check(f'#login-form input[name=scheme][value="{scheme}"]')
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login")).to_be_hidden()


def test_the_table_lists_every_router(page: Page, console: Console) -> None:
    from playwright.sync_api import expect

    routers = console.routers()
    sign_in(page, console)

    rows = page.locator("#routers tbody tr[data-router]")
    expect(rows).to_have_count(len(routers))
    for router in routers:
        row = page.locator(f'#routers tbody tr[data-router="{router["router_id"]}"]')
        expect(row).to_contain_text(router["name"])
        expect(row.locator("td[data-label=Instance]")).to_contain_text("configured")
    expect(page.locator("#counts")).to_contain_text(f"All routers{len(routers)}")
    expect(page.locator("#routers caption")).to_contain_text(f"of {len(routers)}")

    # The keyboard reaches a row and Enter opens its router.
    first = rows.first
    first.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/router/[0-9a-f-]{36}$"))
    expect(page.locator("#router-title")).to_contain_text(first.get_attribute("data-router") or "")

    if os.environ.get("ASTARA_SCREENSHOTS") == "1":
        page.goto(f"{console.base}/#/")
        expect(rows).to_have_count(len(routers))
        page.screenshot(path=str(DOCS / "console-fleet.png"))


def test_the_first_paint_waits_for_one_listing_and_the_live_feed_reads_it_again_after(
    page: Page, console: Console
) -> None:
    import time

    from playwright.sync_api import Route, expect

    sent: list[str] = []
    aborted: list[str] = []

    def slow_first(route: Route) -> None:
        sent.append(route.request.url)
        if len(sent) == 1:
            time.sleep(1.0)  # the first listing is slow (a big fleet): the live feed opens first
        route.continue_()

    page.route("**/routers?*", slow_first)
    page.on(
        "requestfailed",
        lambda request: aborted.append(request.url) if "/routers?" in request.url else None,
    )
    # signed in already (a reload of the tab): the page starts with its token
    page.add_init_script(
        f"sessionStorage.setItem('astara.token', '{TOKEN}');"
        "sessionStorage.setItem('astara.scheme', 'bearer');"
    )
    page.goto(f"{console.base}/")
    expect(page.locator("#live")).to_have_attribute("data-mode", "live")
    expect(page.locator("#routers tbody tr[data-router]")).to_have_count(4)
    # The first listing was painted, not thrown away for a second one when the feed opened,
    # and the page was read once more after it (what changed before the feed opened).
    wait_for(lambda: len(sent) >= 2, f"a second listing after the first: {sent}", WAIT)
    assert aborted == [], aborted


def test_a_killed_appliance_turns_its_row_to_rebuilding_and_back_without_a_reload(
    page: Page, console: Console
) -> None:
    from playwright.sync_api import expect

    router = console.routers()[0]["router_id"]
    sign_in(page, console)
    row = page.locator(f'#routers tbody tr[data-router="{router}"]')
    expect(row).to_have_attribute("data-instance", "configured")
    # Every instance state the row shows, recorded by the page; a reload would lose the mark.
    page.evaluate(
        """(router) => {
            window.consoleNotReloaded = true;
            window.seenStates = [];
            new MutationObserver(() => {
                for (const tr of document.querySelectorAll(`tr[data-router="${router}"]`)) {
                    const s = tr.dataset.instance;
                    if (window.seenStates[window.seenStates.length - 1] !== s) {
                        window.seenStates.push(s);
                    }
                }
            }).observe(document.querySelector('#routers tbody'),
                       {subtree: true, childList: true, attributes: true});
        }""",
        router,
    )
    boots = console.boots(router)

    # When its appliance dies in the simulator
    killed = requests.post(f"{console.sim}/sim/appliances/{router}/kill", timeout=WAIT)
    assert killed.status_code == 200, killed.text

    # Then the row leaves "configured" (the orchestrator replaces the VM) and comes back to it
    expect(row).not_to_have_attribute("data-instance", "configured")
    wait_for(lambda: console.boots(router) > boots, "a new VM booted for the killed one", WAIT)
    expect(row).to_have_attribute("data-instance", "configured")
    seen = page.evaluate("window.seenStates")
    assert seen[-1] == "configured" and set(seen) - {"configured"}, seen
    assert page.evaluate("window.consoleNotReloaded") is True


def test_a_rebuild_clicked_in_the_page_boots_a_vm_and_shows_in_the_history(
    page: Page, console: Console
) -> None:
    from playwright.sync_api import expect

    router = console.routers()[-1]["router_id"]
    wait_for(lambda: _all_configured(console, 4), "every router configured again", WAIT)
    boots = console.boots(router)
    sign_in(page, console)
    page.locator(f'#routers tbody tr[data-router="{router}"]').click()
    expect(page.locator("#router-body")).to_contain_text("Last 20 transitions")

    # When the operator asks for a rebuild with a reason
    page.click('#router [data-action="router-rebuild"]')
    dialog = page.locator("#action")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#action-image")).to_be_visible()
    page.fill("#action-reason", "console test: replace the VM")
    page.click("#action-send")

    # Then the page says what was sent, the simulator boots a VM, and the router's history
    # names the command and its reason
    expect(dialog).to_be_hidden()
    expect(page.locator("#notice")).to_contain_text("router-rebuild")
    expect(page.locator("#notice")).to_contain_text("console test: replace the VM")
    wait_for(lambda: console.boots(router) > boots, "the rebuild booted a VM", WAIT)
    commands = page.locator('#router-body table[data-table="commands"]')
    expect(commands).to_contain_text("router-rebuild")
    expect(commands).to_contain_text("console test: replace the VM")
    expect(commands).to_contain_text("http client 127.0.0.1")
    expect(page.locator('#router-body table[data-table="transitions"]')).to_contain_text(
        "RebuildInstance"
    )
    # and the configuration the VM last accepted, folded until asked for
    config = page.locator("#router-body details.config").first
    config.locator("summary").click()
    expect(config.locator("pre")).to_contain_text('"orchestrator"')

    if os.environ.get("ASTARA_SCREENSHOTS") == "1":
        wait_for(lambda: _all_configured(console, 4), "the rebuilt router configured", WAIT)
        expect(page.locator("#router-body dl")).to_contain_text("configured")
        page.screenshot(path=str(DOCS / "console-router.png"))


def test_without_the_token_the_page_asks_for_it_and_the_api_refuses_the_action(
    page: Page, console: Console
) -> None:
    from playwright.sync_api import expect

    router = console.routers()[0]["router_id"]
    page.goto(f"{console.base}/")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-why")).to_contain_text("needs a token")
    expect(page.locator("#routers tbody tr[data-router]")).to_have_count(0)

    refused = requests.put(
        f"{console.base}/router/rebuild/{router}", json={"reason": "no token"}, timeout=WAIT
    )
    assert refused.status_code == 401, refused.text

    # A wrong token is refused too, and the login comes back saying so
    page.fill("#login-token", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-why")).to_contain_text("refused the token")
    assert page.evaluate("sessionStorage.getItem('astara.token')") is None
    # and the token is never in the address
    assert TOKEN not in page.url and "not-the-token" not in page.url


def test_the_static_files_need_no_token_and_hold_no_data(console: Console) -> None:
    for path in ("/", "/static/app.js", "/static/app.css"):
        answer = requests.get(f"{console.base}{path}", timeout=WAIT)
        assert answer.status_code == 200, path
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        again = requests.get(
            f"{console.base}{path}", headers={"If-None-Match": answer.headers["ETag"]}, timeout=WAIT
        )
        assert again.status_code == 304
    assert requests.get(f"{console.base}/routers", timeout=WAIT).status_code == 401
    assert requests.get(f"{console.base}/static/nope.js", timeout=WAIT).status_code == 401


def test_the_page_pages_in_the_browser_when_the_api_has_no_paging_nor_events(
    page: Page, console: Console
) -> None:
    from playwright.sync_api import Route, expect

    routers = console.routers()

    def refuse_paging(route: Route) -> None:  # what the API answered before it paged
        route.fulfill(
            status=400,
            content_type="application/json",
            body='{"error": "unknown query parameter(s) \'offset\' (this route takes none)"}',
        )

    page.route(re.compile(r".*/routers\?.*"), refuse_paging)
    page.route(re.compile(r".*/events$"), lambda route: route.fulfill(status=404, body="{}"))
    sign_in(page, console)

    expect(page.locator("#routers tbody tr[data-router]")).to_have_count(len(routers))
    expect(page.locator("#live")).to_have_attribute("data-mode", "polling")
    page.fill("#f-q", routers[0]["name"])
    expect(page.locator("#routers tbody tr[data-router]")).to_have_count(1)
    expect(page.locator("#routers caption")).to_contain_text("1–1 of 1")


def test_on_a_phone_the_table_is_one_card_per_router_without_sideways_scrolling(
    browser: Browser, console: Console
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone = context.new_page()
        sign_in(phone, console)
        expect(phone.locator("#routers tbody tr[data-router]").first).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        label = phone.evaluate(
            "getComputedStyle(document.querySelector('#routers td[data-label]'), '::before')"
            ".content"
        )
        assert label == '"Tenant"'
    finally:
        context.close()


def test_a_keystone_token_signs_in_and_its_user_is_who_acted(page: Page, console: Console) -> None:
    from playwright.sync_api import expect

    assert console.service.sim is not None
    keystone = console.service.sim.cloud.keystone
    keystone.add_user("oncall", PASSWORD, "ops", roles=("member", "reader", "admin"))
    auth_url = f"{console.sim}/identity"
    router = console.routers()[0]["router_id"]

    # Given an operator signed in with a Keystone token holding the admin role
    sign_in(page, console, password_token(auth_url, "oncall", "ops"), scheme="keystone")
    expect(page.locator("#routers tbody tr[data-router]")).to_have_count(4)
    assert page.evaluate("sessionStorage.getItem('astara.scheme')") == "keystone"

    # When they put a router in debug mode with a reason (and take it out again)
    page.locator(f'#routers tbody tr[data-router="{router}"]').click()
    for action, reason in (("router-debug", "on call: look"), ("router-manage", "on call: done")):
        page.click(f'#router [data-action="{action}"]')
        page.fill("#action-reason", reason)
        page.click("#action-send")
        expect(page.locator("#notice")).to_contain_text(action)

    # Then the router's commands name the Keystone user and project as who acted
    commands = page.locator('#router-body table[data-table="commands"]')
    expect(commands).to_contain_text("on call: done")
    expect(commands).to_contain_text("keystone user oncall (project ops)")


def test_a_keystone_token_without_the_role_is_told_which_role_it_lacks(
    page: Page, console: Console
) -> None:
    from playwright.sync_api import expect

    assert console.service.sim is not None
    console.service.sim.cloud.keystone.add_user(
        "viewer", PASSWORD, "ops-viewers", roles=("member", "reader")
    )
    viewer = password_token(f"{console.sim}/identity", "viewer", "ops-viewers")
    sign_in(page, console, viewer, scheme="keystone")

    # The token is valid (no login again) but lacks the role: the page says so and lists nothing
    expect(page.locator("#problem")).to_contain_text("403")
    expect(page.locator("#problem")).to_contain_text("admin")
    expect(page.locator("#routers tbody tr[data-router]")).to_have_count(0)
    refused = requests.put(
        f"{console.base}/router/debug/{console.routers()[0]['router_id']}",
        json={"reason": "viewer"},
        headers={"X-Auth-Token": viewer},
        timeout=WAIT,
    )
    assert refused.status_code == 403 and "admin" in refused.json()["error"], refused.text
