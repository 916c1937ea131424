from __future__ import annotations

import pytest

from domaintune.governance.langid import identify


@pytest.mark.parametrize("text,code", [
    ("The account holder can close the account at any time without a fee.", "en"),
    ("客户可以随时在网上银行办理销户，不收取任何费用。", "zh"),
    ("海港银行推出HarborPay服务，支持iOS和Android手机，单笔限额为5000美元。", "zh"),  # Latin names inside
    ("口座はいつでもオンラインで開設できます。", "ja"),
    ("고객은 언제든지 계좌를 해지할 수 있습니다.", "ko"),
    ("Клиент может закрыть счёт в любое время.", "ru"),
    ("Der Kunde kann das Konto jederzeit in der Filiale schließen und bekommt das Geld.", "de"),
    ("Le client peut fermer le compte à tout moment et sans frais pour la banque.", "fr"),
    ("Where to find us\n- Central Branch — 88 Quay Street (Mon–Fri 9:00–17:00)\n- Call us for an "
     "appointment", "en"),
    ("12345 67890 +-*/", "other"),
    ("xq zrv plk mntr gdfs", "other"),
])
def test_identify(text, code):
    assert identify(text).code == code


def test_confidence_is_a_share():
    lang = identify("The cat sat on the mat and it was happy in the sun.")
    assert lang.code == "en" and 0 < lang.confidence <= 1


def test_config_accepts_exactly_the_codes_the_identifier_returns():
    from typing import get_args

    from domaintune.config import LanguageCode
    from domaintune.governance.langid import _stopwords

    scripts = {"zh", "ja", "ko", "ru", "ar", "other"}
    assert set(get_args(LanguageCode)) == scripts | set(_stopwords()[1])
