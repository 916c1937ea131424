"""Write bench/data/pii_eval.jsonl: a labelled PII evaluation set, English and Chinese.

    python bench/make_pii_eval.py [--seed 0] [--out bench/data/pii_eval.jsonl]

Each line: {"id", "lang", "kind", "text", "spans": [{"start", "end", "type"}]}. `kind` is
"valid" (the spans are real PII: IDs and cards generated with correct check digits) or
"lookalike" (no spans: wrong checksums, impossible dates, order and tracking numbers, ISBNs,
timestamps, versions, file names...). Fictional values only: example.com domains, reserved
phone ranges where they exist, test card prefixes.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import date, timedelta
from pathlib import Path

from domaintune.governance.pii import cn_id_check_char, luhn_ok

OUT = Path(__file__).resolve().parent / "data" / "pii_eval.jsonl"


# ----------------------------------------------------------------------------- values
def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def resident_id(rng: random.Random, checksum_ok: bool = True, real_date: bool = True) -> str:
    area = rng.choice(["110105", "310104", "440305", "510107", "330106", "420102"])
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(20000))
    birth = f"{born:%Y%m%d}" if real_date else f"{born.year}0230"
    first17 = area + birth + digits(rng, 3)
    check = cn_id_check_char(first17)
    if not checksum_ok:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return first17 + check


def luhn_number(rng: random.Random, prefix: str, length: int, valid: bool = True) -> str:
    body = prefix + digits(rng, length - len(prefix) - 1)
    good = next(d for d in "0123456789" if luhn_ok(body + d))
    return body + (good if valid else rng.choice([d for d in "0123456789" if d != good]))


def card(rng: random.Random, valid: bool = True) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("62", 16), ("62", 19), ("37", 15)])
    number = luhn_number(rng, prefix, length, valid)
    style = rng.choice(["plain", "space", "dash"]) if length == 16 else "plain"
    sep = {"space": " ", "dash": "-"}.get(style)
    return sep.join(number[i:i + 4] for i in range(0, 16, 4)) if sep else number


def email(rng: random.Random) -> str:
    user = rng.choice(["li.wei", "zhang_min", "j.smith", "alice.wong", "chen88", "m.garcia", "wang.fang+bank",
                       "t.nguyen", "liuyang2020", "k.oconnor"])
    host = rng.choice(["example.com", "mail.example.cn", "corp.example.org", "example.net"])
    return f"{user}@{host}"


def phone(rng: random.Random) -> str:
    mobile = f"1{rng.choice('3456789')}{digits(rng, 9)}"
    return rng.choice([
        mobile, f"+86 {mobile}", f"+86-{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
        f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}",
        f"+44 20 7946 0{digits(rng, 3)}", f"+1 415-555-01{digits(rng, 2)}", f"(212) 555-01{digits(rng, 2)}",
        f"010-6{digits(rng, 7)}", f"+49 30 {digits(rng, 7)}", f"+852 2{digits(rng, 3)} {digits(rng, 4)}",
        f"{mobile[:3]}.{mobile[3:7]}.{mobile[7:]}",  # dotted: added without tuning the detector to it
    ])


def ip(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "2001:db8:0:0:1:0:0:1"])
    first = rng.choice([10, 172, 192, 203, 58, 114])
    return ".".join(str(x) for x in [first, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])


def url_credentials(rng: random.Random) -> tuple[str, str, str]:
    user, pw = rng.choice([("deploy", "s3cr3t!"), ("admin", "P@55w0rd"), ("ci-bot", "tok_9f8e7d"), ("etl", "hunter2")])
    scheme = rng.choice(["https", "ftp", "postgres", "redis"])
    return f"{scheme}://", f"{user}:{pw}", f"@{rng.choice(['db.example.com', 'git.example.org', '10.0.0.5'])}/x"


# ----------------------------------------------------------------------------- templates
VALID = {
    "EMAIL": {"en": ["Please send the statement to {} by Friday.", "Contact: {}"],
              "zh": ["请把对账单发送到{}，谢谢。", "联系邮箱：{}。"]},
    "PHONE": {"en": ["You can reach me on {} after 6pm.", "Mobile: {}"],
              "zh": ["我的手机号是{}，请回电。", "联系电话：{}。"]},
    "ID_CARD": {"en": ["Applicant resident ID: {}.", "ID number {} was verified."],
                "zh": ["身份证号码：{}。", "客户身份证{}已核验。"]},
    "BANK_CARD": {"en": ["Charge card {} for the annual fee.", "Card number: {}"],
                  "zh": ["请从卡号{}扣款。", "银行卡：{}，到期日12/27。"]},
    "IP": {"en": ["Login from {} was blocked.", "The server at {} timed out."],
           "zh": ["来自{}的登录已被拦截。", "服务器地址为{}。"]},
}


def lookalikes(rng: random.Random) -> list[tuple[str, str, str]]:
    """(lang, note, text) with no PII in them."""
    bad_id, bad_date_id = resident_id(rng, checksum_ok=False), resident_id(rng, real_date=False)
    bad_card, order_card = card(rng, valid=False), luhn_number(rng, "4", 16)
    mobile_like = f"1{rng.choice('3589')}{digits(rng, 9)}"
    stamp = f"20{rng.randrange(10, 25)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}{digits(rng, 6)}"
    return rng.choice([
        ("zh", "id wrong checksum", f"身份证号{bad_id}。"),
        ("en", "id wrong checksum", f"ID number {bad_id} was rejected by the system."),
        ("zh", "id impossible date", f"证件号码：{bad_date_id}"),
        ("en", "card fails luhn", f"Card number {bad_card} was declined."),
        ("zh", "card fails luhn", f"卡号{bad_card}无效。"),
        ("en", "order number passing luhn", f"Your order number {order_card} has shipped."),
        ("zh", "order number passing luhn", f"订单号：{order_card}，已发货。"),
        ("zh", "order number like a mobile", f"快递单号{mobile_like}正在派送。"),
        ("en", "isbn", f"ISBN {luhn_number(rng, '978', 13)} is out of print."),
        ("en", "timestamp", f"Event logged at {stamp} UTC."),
        ("zh", "timestamp", f"流水时间戳{stamp}。"),
        ("en", "epoch millis", f"created_at=17{digits(rng, 11)}"),
        ("en", "version", f"Upgrade to version {rng.randrange(1, 9)}.{rng.randrange(10)}.{rng.randrange(10)}."
                          f"{rng.randrange(10)} today."),
        ("zh", "version", f"请升级到版本 {rng.randrange(1, 9)}.{rng.randrange(10)}.{rng.randrange(10)}."
                          f"{rng.randrange(10)}。"),
        ("en", "invalid ip", f"Octets like {rng.randrange(256, 999)}.{rng.randrange(256)}.1.1 are not addresses."),
        ("en", "file name", f"Use logo@{rng.randrange(2, 4)}x.png for retina screens."),
        ("en", "handle", f"Follow @harborbank_{digits(rng, 3)} for updates."),
        ("en", "clock time", f"The branch opens at {rng.randrange(7, 10)}:30:00 daily."),
        ("zh", "amount", f"转账金额{digits(rng, 1)},{digits(rng, 3)},{digits(rng, 3)}.00元已到账。"),
        ("en", "url without credentials", "See https://www.example.com/help?q=card for details."),
        ("zh", "product code", f"产品编号HB-{digits(rng, 12)}已下架。"),
        # Hard cases added without tuning the detector to them (no deny word covers them):
        ("en", "sku passing luhn", f"SKU {luhn_number(rng, '4', 16)} is back in stock."),
        ("zh", "member number like a mobile", f"会员编号{mobile_like}，积分已到账。"),
    ])


def one_valid(rng: random.Random, kind: str, lang: str) -> tuple[str, list[dict]]:
    if kind == "URL_CREDENTIALS":
        head, secret, tail = url_credentials(rng)
        lead = "Clone from " if lang == "en" else "仓库地址："
        text = lead + head + secret + tail
        start = len(lead + head)
        spans = [{"start": start, "end": start + len(secret), "type": kind}]
        if tail.startswith("@10."):  # a host given as an address is an IP like any other
            host = start + len(secret) + 1
            spans.append({"start": host, "end": host + len("10.0.0.5"), "type": "IP"})
        return text, spans
    value = {"EMAIL": email, "PHONE": phone, "ID_CARD": resident_id, "BANK_CARD": card, "IP": ip}[kind](rng)
    template = rng.choice(VALID[kind][lang])
    start = template.index("{}")
    return template.format(value), [{"start": start, "end": start + len(value), "type": kind}]


def build(seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    kinds = [*VALID, "URL_CREDENTIALS"]
    for i in range(120):  # 20 per type, half English, half Chinese
        kind, lang = kinds[i % len(kinds)], ("en", "zh")[(i // len(kinds)) % 2]
        text, spans = one_valid(rng, kind, lang)
        items.append({"lang": lang, "kind": "valid", "note": kind, "text": text, "spans": spans})
    for _ in range(20):  # two entities in one text
        lang = rng.choice(["en", "zh"])
        (a, sa), (b, sb) = (one_valid(rng, rng.choice(kinds), lang) for _ in range(2))
        joint = " " if lang == "en" else ""
        shifted = [{**s, "start": s["start"] + len(a) + len(joint), "end": s["end"] + len(a) + len(joint)} for s in sb]
        items.append({"lang": lang, "kind": "valid", "note": "two entities", "text": a + joint + b,
                      "spans": sa + shifted})
    for _ in range(80):
        lang, note, text = lookalikes(rng)
        items.append({"lang": lang, "kind": "lookalike", "note": note, "text": text, "spans": []})
    return [{"id": f"pii-{n:03d}", **item} for n, item in enumerate(items)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    items = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    print(f"{len(items)} items -> {args.out}")


if __name__ == "__main__":
    main()
