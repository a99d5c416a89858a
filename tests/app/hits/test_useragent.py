import crawleruseragents
import msgspec
import pytest

from app.hits.useragent import Agent, _crawler_regex, classify

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
SAFARI_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.122 Mobile Safari/537.36"
)
CHROME_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
CHROME_OS = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
OUTLOOK_DESKTOP = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"

BOTS = {
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl": "curl/8.0.1",
    "python-requests": "python-requests/2.31.0",
    "wget": "Wget/1.21.4",
    "headless-chrome": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/126.0.0.0 Safari/537.36"
    ),
}


def test_chrome_on_windows_is_a_desktop_browser() -> None:
    assert classify(CHROME_WINDOWS) == Agent("desktop", "Chrome", "Windows", False, False)


def test_safari_on_a_mac_is_a_desktop_browser() -> None:
    agent = classify(SAFARI_MAC)
    assert (agent.device, agent.browser, agent.os) == ("desktop", "Safari", "Mac OS X")


def test_firefox_on_linux_is_a_desktop_browser() -> None:
    assert classify(FIREFOX_LINUX) == Agent("desktop", "Firefox", "Linux", False, False)


def test_chrome_os_is_a_desktop() -> None:
    assert classify(CHROME_OS).device == "desktop"


def test_safari_on_an_iphone_is_mobile() -> None:
    agent = classify(SAFARI_IPHONE)
    assert (agent.device, agent.os, agent.is_bot) == ("mobile", "iOS", False)
    assert "Safari" in agent.browser


def test_an_ipad_is_a_tablet_even_though_it_sends_a_mobile_token() -> None:
    agent = classify(SAFARI_IPAD)
    assert (agent.device, agent.os) == ("tablet", "iOS")


def test_an_android_phone_is_mobile() -> None:
    agent = classify(CHROME_ANDROID_PHONE)
    assert (agent.device, agent.os) == ("mobile", "Android")
    assert agent.browser.startswith("Chrome")


def test_an_android_device_without_the_mobile_token_is_a_tablet() -> None:
    agent = classify(CHROME_ANDROID_TABLET)
    assert (agent.device, agent.os) == ("tablet", "Android")


@pytest.mark.parametrize("user_agent", BOTS.values(), ids=BOTS.keys())
def test_listed_crawlers_and_scripts_are_bots(user_agent: str) -> None:
    agent = classify(user_agent)
    assert agent.is_bot
    assert agent.device == "bot"
    assert not agent.mail_proxy


@pytest.mark.parametrize("user_agent", ["", "   "])
def test_an_empty_user_agent_is_a_bot(user_agent: str) -> None:
    assert classify(user_agent) == Agent("bot", "Other", "Other", True, False)


def test_gmail_image_proxy_is_a_mail_proxy_not_a_bot() -> None:
    agent = classify(GMAIL_PROXY)
    assert (agent.mail_proxy, agent.is_bot, agent.device) == (True, False, "other")


def test_yahoo_mail_proxy_is_a_mail_proxy_not_a_bot() -> None:
    agent = classify(YAHOO_PROXY)
    assert (agent.mail_proxy, agent.is_bot, agent.device) == (True, False, "other")


def test_a_bare_mozilla_token_is_apple_mail_privacy_protection() -> None:
    assert classify("Mozilla/5.0") == Agent("other", "Other", "Other", False, True)


def test_a_mozilla_token_followed_by_more_is_not_apple_mail_privacy_protection() -> None:
    assert not classify("Mozilla/5.0 (compatible)").mail_proxy


def test_mail_proxies_are_listed_as_crawlers_so_the_order_of_checks_matters() -> None:
    assert crawleruseragents.is_crawler(GMAIL_PROXY)
    assert crawleruseragents.is_crawler(YAHOO_PROXY)


def test_outlook_desktop_is_a_human_reader_not_a_bot() -> None:
    agent = classify(OUTLOOK_DESKTOP)
    assert (agent.is_bot, agent.mail_proxy, agent.device) == (False, False, "desktop")
    assert agent.browser == "Outlook"


def test_classification_is_cached_per_user_agent() -> None:
    assert classify(FIREFOX_LINUX) is classify(FIREFOX_LINUX)


def test_an_agent_cannot_be_modified() -> None:
    with pytest.raises(AttributeError):
        classify(CHROME_WINDOWS).device = "bot"  # type: ignore[misc]


def test_an_agent_serialises_without_the_raw_user_agent() -> None:
    encoded = msgspec.json.encode(classify(CHROME_WINDOWS))
    assert b"Mozilla" not in encoded
    assert b"537.36" not in encoded


def test_the_combined_crawler_regex_agrees_with_crawler_user_agents() -> None:
    regex = _crawler_regex()
    examples = [
        example
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for example in entry.get("instances", [])
    ]
    humans = [CHROME_WINDOWS, SAFARI_MAC, SAFARI_IPHONE, SAFARI_IPAD, CHROME_ANDROID_PHONE]
    humans += [CHROME_ANDROID_TABLET, FIREFOX_LINUX, CHROME_OS, OUTLOOK_DESKTOP, "Mozilla/5.0"]
    assert len(examples) > 1000
    for user_agent in examples + humans:
        expected = crawleruseragents.is_crawler(user_agent)
        assert (regex.search(user_agent) is not None) == expected, user_agent
