"""The search page in real headless Chromium against a real ``tuwen serve`` (uvicorn) process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from processes import free_port, stop_process
from test_service_fixtures import read

from indexer import store

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def server(built_settings, tmp_path_factory):
    """``tuwen serve`` on a free port, as a user would start it; stopped after the module."""
    yield from _serve(built_settings.home, tmp_path_factory)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian chromium and chromium-driver (make browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--lang=zh-CN",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ]:
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def corpus_records(built_settings):
    engine = store.make_engine(built_settings.store_url)
    with store.transaction(engine) as session:
        out = (
            store.list_texts(session, collection=store.TEXT_QUERIES),
            [
                r
                for r in store.list_images(session, collection=store.IMAGE_QUERIES)
                if r.status == store.STATUS_OK
            ],
        )
    engine.dispose()
    return out


def wait_for(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))


ALL_IMAGES_LOADED = """
const imgs = document.querySelectorAll(arguments[0] + ' img');
return imgs.length > 0 && [...imgs].every(i => i.complete && i.naturalWidth > 0);
"""


def test_search_page_text_and_image_search(server, driver, corpus_records):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    text_queries, query_images = corpus_records
    driver.get(server + "/")
    assert driver.title.startswith("图文检索")
    wait_for(driver, lambda d: "已就绪" in d.find_element(By.ID, "status").text)

    # type a query -> an image grid with scores, the same ranking as the API
    caption = text_queries[2].caption
    box = driver.find_element(By.ID, "query")
    box.send_keys(caption)
    box.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#text-results figure.result")) == 10)
    wait_for(driver, lambda d: d.execute_script(ALL_IMAGES_LOADED, "#text-results"))
    api = get_json(f"{server}/api/search/text?{urllib.parse.urlencode({'q': caption, 'k': 10})}")[1]
    figcaptions = driver.find_elements(By.CSS_SELECTOR, "#text-results figcaption")
    shown = [f.get_attribute("title") for f in figcaptions]
    assert shown == [h["image_id"] for h in api["results"]]
    link = driver.find_element(By.CSS_SELECTOR, "#text-results figure.result a")
    assert link.get_attribute("href") == server + api["results"][0]["url"]

    # upload an image -> captions with scores, and similar images
    query_image = query_images[3]
    driver.find_element(By.ID, "file").send_keys(query_image.path)
    captions_css = "#caption-results li.caption-result"
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, captions_css)) == 10)
    wait_for(driver, lambda d: d.execute_script(ALL_IMAGES_LOADED, "#similar-results"))
    expected = _post_image(f"{server}/api/search/image?k=10", read(query_image.path))
    items = driver.find_elements(By.CSS_SELECTOR, captions_css)
    assert [li.find_element(By.CSS_SELECTOR, ".tid").text for li in items] == [h["text_id"] for h in expected]
    assert expected[0]["caption"] in items[0].text
    assert f"{expected[0]['score']:.3f}" in items[0].text
    assert driver.find_element(By.ID, "error").is_displayed() is False

    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "search-page.png"))


def test_a_search_is_a_shareable_url_and_the_status_names_the_model(
    server, driver, corpus_records, built_settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    text_queries, _ = corpus_records
    caption = text_queries[5].caption
    driver.get(f"{server}/?{urllib.parse.urlencode({'q': caption, 'k': 5})}")  # opened from a link
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#text-results figure.result")) == 5)
    api = get_json(f"{server}/api/search/text?{urllib.parse.urlencode({'q': caption, 'k': 5})}")[1]
    shown = [
        f.get_attribute("title") for f in driver.find_elements(By.CSS_SELECTOR, "#text-results figcaption")
    ]
    assert shown == [h["image_id"] for h in api["results"]]
    assert driver.find_element(By.ID, "query").get_attribute("value") == caption

    status = driver.find_element(By.ID, "status").text
    stats = get_json(f"{server}/api/stats")[1]
    assert stats["model"]["model_id"] in status and stats["model"]["spec"] in status
    assert str(built_settings.home) not in status and "/" not in status.split("索引")[0]

    box = driver.find_element(By.ID, "query")  # a typed search becomes the address to share
    box.clear()
    box.send_keys(text_queries[6].caption)
    box.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: "q=" in d.current_url and text_queries[6].caption == _query_of(d.current_url))


def _query_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("q", [""])[0]


def test_search_page_shows_the_reason_for_a_refused_upload(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get(server + "/")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("这不是图片")
    driver.find_element(By.ID, "file").send_keys(str(not_an_image))
    wait_for(driver, lambda d: d.find_element(By.ID, "error").is_displayed())
    message = driver.find_element(By.ID, "error").text
    assert "422" in message and "not a recognised image format" in message
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "search-page-error.png"))


def _post_image(url: str, data: bytes) -> list[dict]:
    boundary = "tuwen-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())["results"]


# --- Collections: the picker, filters from the corpus's fields, "more", "more like this", the URL ---

FIGURES = "#corpus-results figure.result"


@pytest.fixture(scope="module")
def corpus_server(small_corpus, tmp_path_factory):
    """``tuwen serve`` on a home with the competition index and the "shop" corpus (both tiny)."""
    from test_service_fixtures import add_shop, build_home

    root = tmp_path_factory.mktemp("browser-corpora")
    settings = build_home(root / "home", small_corpus[0], precision="fp32")
    add_shop(settings, root / "shop")
    yield from _serve(settings.home, tmp_path_factory, precision="fp32")


def _serve(home, tmp_path_factory, **settings: str):
    """``tuwen serve --home HOME`` on a free port with the environment's TUWEN_ settings replaced by
    ``settings`` (``precision="fp32"``: TUWEN_PRECISION=fp32); yields its address once ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    env.update(HF_HUB_OFFLINE="1", **{f"TUWEN_{k.upper()}": v for k, v in settings.items()})
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuwen.cli", "serve", "--home", str(home), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _ready(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tuwen serve did not become ready:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        stop_process(proc)


def _ready(base: str) -> bool:
    try:
        return get_json(f"{base}/readyz")[0] == 200
    except OSError:
        return False


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def _shown_ids(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [f.get_attribute("data-id") for f in driver.find_elements(By.CSS_SELECTOR, FIGURES)]


def _params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(url).query).items()}


def test_a_collection_is_searched_filtered_paged_and_shared(corpus_server, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    api = f"{corpus_server}/api/corpora/shop/search"
    driver.get(corpus_server + "/")
    wait_for(
        driver,
        lambda d: (
            "shop" in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#corpus option")]
        ),
    )
    Select(driver.find_element(By.ID, "corpus")).select_by_value("shop")
    assert driver.find_element(By.ID, "corpus-panel").is_displayed()
    assert not driver.find_element(By.ID, "text-panel").is_displayed()
    # the fields as controls: a select for the category, min/max for the price, dates for the time
    category = Select(driver.find_element(By.CSS_SELECTOR, "#filters select[data-field=category]"))
    assert sorted(o.text for o in category.options) == sorted(["全部", "连衣裙", "牛仔裤", "衬衫", "外套"])
    assert len(driver.find_elements(By.CSS_SELECTOR, "#filters input[data-field=price][type=number]")) == 2
    assert len(driver.find_elements(By.CSS_SELECTOR, "#filters input[data-field=time][type=date]")) == 2

    box = driver.find_element(By.ID, "corpus-query")  # a search, scores shown, then "more"
    box.send_keys("红色连衣裙")
    box.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, FIGURES)) == 20)
    expected = _post_json(api, {"q": "红色连衣裙", "k": 40})["results"]
    assert _shown_ids(driver) == [h["id"] for h in expected[:20]]
    first_score = driver.find_element(By.CSS_SELECTOR, f"{FIGURES} .score").text
    assert first_score == f"{expected[0]['score']:.3f}"
    driver.find_element(By.ID, "more").click()
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, FIGURES)) == 40)
    assert _shown_ids(driver) == [h["id"] for h in expected]
    assert not driver.find_element(By.ID, "more").is_displayed()

    category.select_by_visible_text("连衣裙")  # a filter: the address carries it
    price_min = driver.find_element(By.CSS_SELECTOR, "#filters input[data-field=price][data-op=gte]")
    price_min.send_keys("100")
    price_min.send_keys(Keys.TAB)
    where = {"category": "连衣裙", "price": {"gte": 100}}
    wait_for(driver, lambda d: json.loads(_params(d.current_url).get("where", "{}")) == where)
    filtered = _post_json(api, {"q": "红色连衣裙", "k": 20, "where": where})["results"]
    wait_for(driver, lambda d: _shown_ids(d) == [h["id"] for h in filtered])
    assert all("连衣裙" in f.text for f in driver.find_elements(By.CSS_SELECTOR, f"{FIGURES} .attrs"))
    wait_for(driver, lambda d: d.execute_script(ALL_IMAGES_LOADED, "#corpus-results"))
    # the README's docs/search-page.png is a copy of this one (the test leaves the checkout alone)
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "collection-page.png"))

    clicked = _shown_ids(driver)[1]  # "more like this", still filtered
    driver.find_elements(By.CSS_SELECTOR, FIGURES)[1].click()
    wait_for(driver, lambda d: _params(d.current_url).get("item") == clicked)
    similar = _post_json(api, {"item": clicked, "k": 20, "where": where})["results"]
    wait_for(driver, lambda d: _shown_ids(d) == [h["id"] for h in similar])
    assert clicked not in _shown_ids(driver)

    shared = driver.current_url  # the link reopens the same search
    driver.get("about:blank")
    driver.get(shared)
    wait_for(driver, lambda d: _shown_ids(d) == [h["id"] for h in similar])
    chosen = Select(driver.find_element(By.CSS_SELECTOR, "#filters select[data-field=category]"))
    assert chosen.first_selected_option.text == "连衣裙"
    assert (
        driver.find_element(By.CSS_SELECTOR, "#filters input[data-field=price][data-op=gte]").get_attribute(
            "value"
        )
        == "100"
    )
