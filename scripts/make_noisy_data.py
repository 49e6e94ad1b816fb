#!/usr/bin/env python3
"""Generate a realistic noisy raw support corpus for Brightwave Home, with a ground-truth file.

The refine acceptance tests and scripts/bench_refine.py read it. Deterministic given --seed:
the same arguments give byte-identical files. Writes into OUT_DIR:

  tickets.csv          helpdesk ticket export: ticket_id, created, customer_name, customer_email,
                       channel, product, status, transcript ("Customer: …" / "Agent (Sam): …" /
                       "Bot: …" lines; web-form HTML entities, mojibake, odd whitespace)
  chat_widget.jsonl    chat-widget export, one nested JSON conversation per line: the ticket id at
                       conversation.ref, the visitor at conversation.visitor.name, events with
                       author.type visitor/agent/bot/tool and HTML bodies at body.html
  support_mail.mbox    e-mail threads (customer ⇄ support): signatures with phone numbers and
                       street addresses, "Sent from my iPhone", quoted replies ("> …" and Outlook
                       "-----Original Message-----"), disclaimers, multipart/alternative mails
  call_transcripts.txt phone-call transcripts: a "=====" line, then "Call BW-… | date | product",
                       then "[hh:mm:ss] Agent: …" lines; the caller is "Customer" or named in the
                       speaker label ("[10:02:20] Maria Garcia: …"); "[inaudible]", hold events
  helpdesk_export.jsonl OpenAI messages JSONL ({"id", "messages", "metadata"})
  eval_items.jsonl     held-out eval items (OpenAI messages, ids EV-…); some are also planted
                       in the training files above, verbatim or lightly edited
  truth.json           what was planted: counts per kind and records per file; ids of `clean`
                       records (refine must keep them) and `pii_free` ones among them;
                       `exact_duplicates` / `near_duplicates` ({id, of, edit}: typo, extra_sentence,
                       greeting); `junk` ({id, kind}: empty, base64, mash, german, spanish,
                       no_agent_reply, tool_only, repetitive); `contaminated` ({id, eval_id, edit});
                       `pii` (every planted string by type: emails, phones, cards, ibans, ipv4,
                       ipv6, addresses = the street line, names = full names, first_names);
                       `records` (per ticket id: file, kind, details, its own PII strings)

Every record carries its ticket id (BW-…) where its format's ingest takes the source id from
(CSV ticket_id, conversation.ref, the mbox Subject "[Ticket BW-…]", the "Call BW-…" header line,
the JSONL id). Planted PII is fictional and generated (Luhn-valid cards, mod-97-valid IBANs).
Distinct clean records are kept measurably apart (template alternatives, filler words, per-customer
writing habits) so that near-duplicate and contamination checks have a clear margin; the tests in
tests/scripts/test_make_noisy_data.py pin those margins.

    python scripts/make_noisy_data.py data/noisy --conversations 400 --seed 7
    python scripts/make_noisy_data.py big-corpus --conversations 100000 --scale   # streaming

--scale streams with constant memory: truth.json then holds counts only (no per-record lists).
"""

from __future__ import annotations

import argparse
import base64
import copy
import csv
import html
import importlib.util
import json
import random
import re
import string
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location("make_sample_data",
                                               Path(__file__).with_name("make_sample_data.py"))
assert _spec is not None and _spec.loader is not None
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)  # the quickstart generator's vocabulary (queues, products, names)

FILES = {"csv": "tickets.csv", "widget": "chat_widget.jsonl", "mbox": "support_mail.mbox",
         "txt": "call_transcripts.txt", "messages": "helpdesk_export.jsonl"}
FORMAT_WEIGHTS = {"csv": 30, "widget": 25, "mbox": 15, "txt": 10, "messages": 20}
COPYABLE = ("csv", "widget", "messages")  # content carries no ticket id: duplicates stay exact
JUNK_KINDS = ("empty", "base64", "mash", "german", "spanish", "no_agent_reply", "tool_only",
              "repetitive")
JUNK_FORMATS = {"empty": ("csv", "widget", "messages"), "base64": ("csv", "messages"),
                "mash": ("widget", "messages"), "german": ("csv", "widget", "mbox", "messages"),
                "spanish": ("csv", "widget", "mbox", "messages"),
                "no_agent_reply": ("csv", "widget", "mbox", "messages"), "tool_only": ("widget",),
                "repetitive": ("csv", "widget", "messages")}
NEAR_EDITS = ("typo", "extra_sentence", "greeting")
CONTAM_EDITS = ("verbatim", "typo", "verbatim", "greeting")
PII_TYPES = ("emails", "phones", "cards", "ibans", "ipv4", "ipv6", "addresses", "names",
             "first_names")
SUPPORT = "support@brightwave-home.example"
HELP_URL = "https://help.brightwave-home.example"
BOT_HELLO = "<p>Hi! I&#39;m <b>Brighty</b>. An agent will join shortly.</p>"
TOOL_HTML = "<pre>{&quot;lookup&quot;: &quot;customer&quot;, &quot;found&quot;: true}</pre>"
SYSTEM = "You are the Brightwave Home support assistant."

FIRST = [*S.FIRST, "Ingrid", "Rahul", "Amara", "Diego", "Hannah", "Oskar", "Leila", "Marco",
         "Nadia", "Pavel", "Chloe", "Tariq", "Mei", "Jonas", "Zara", "Elena"]
LAST = [*S.LAST, "Okafor", "Lindqvist", "Moreau", "Fischer", "Kowalski", "Nguyen", "Dubois",
        "Andersen", "Costa", "Yilmaz", "Kaur", "Becker", "Romano", "Hughes", "Varga", "Mendes"]
AGENTS = ["Sam", "Alex", "Jordan", "Riley", "Morgan", "Casey", "Jamie", "Robin"]
ROUTERS = ["Netgear Nighthawk", "TP-Link Archer", "Fritz!Box 7590", "Eero Pro", "ASUS RT-AX58U",
           "Linksys Velop", "the ISP's own router"]
ROOMS = ["kitchen", "hallway", "living room", "garage", "nursery", "home office", "bedroom"]
CARRIERS = ["DHL", "UPS", "DPD", "FedEx", "Royal Mail", "USPS"]
MONTHS = ["Sep", "Oct", "Nov"]

# Sentence pools: "@pool KEY" starts a pool; items are separated by " | " (lines of one pool join).
_POOL_TEXT = """
@problem BILLING-REFUND
[Hello?/Hi again,/] I [just/] noticed [two/2] payments for [one/a single] {product} on my [credit
card/bank statement/account]. | [Why/How come] [was I/am I being] charged ${amount} [for/on] order
{order} when [the website/your site] said ${amount}? | [I want/I'd like/Please give me] my money
back for the {product}, [it never arrived/it didn't arrive/it doesn't work]. | [My/The] subscription
for the {product} [renewed/was renewed/auto-renewed] [even though/although] I cancelled [it/]
[in/back in] {month}.
@problem SHIPPING-DELAY
[The/My] {product} [I ordered/from order {order}] [is/was] [supposed/meant/due] to [arrive/be here]
[on/by] {weekday}, [still/and still] nothing. | [Your/The] [website/site/app] [says/shows]
[dispatched/shipped] [but/yet] {carrier} [has no record/says they never got it] of order {order}. |
[I've been/I have been/Been] waiting {days} days for [the/my] {product}, [really/and it is/which is]
[not
good enough/disappointing/ridiculous].
@problem RETURNS
[The/My] {product} [stopped working/died/broke] after {days} days[, I want/. I want/. Can I] [to
return it/a refund/to send it back]. | [I/We] [received/got] [the wrong/a different]
[colour/model/size] of {product} [with/in] order {order}. | [Is it/Is it still] possible to return
[an opened/a used/an installed] {product}? [It's/It is] been {days} days.
@problem ACCOUNT-ACCESS
[The/Your] app [keeps/kept] [logging/signing] me out [every/after] {n} [minutes/hours] and [the/my]
{product} [shows/is] offline [in the app/]. | [I/We] [can't/cannot/can not] [add/invite] my
{relative} to [our/my] home [in the app/], the invite [link/e-mail] [expired/never arrived]. |
[Somebody/Someone] changed [the/my] password [on/last] {weekday} and it wasn't me[!/./, please
help].
@problem TECH-SUPPORT
[The/My] {product} [makes/is making] a [clicking/humming/beeping] [sound/noise] [every/about every]
{n} [minutes/seconds]. | [Since/After] [the/your] [update/firmware update] [to/] {fw} [the/my]
{product} [won't/does not/doesn't] [respond/connect/show up]. | [My/The] {product}
[schedule/automation/routine] [stopped running/doesn't run/stopped working] [at/after]
[night/sunset/{n}
pm].
@problem SALES-INQUIRY
[Do you/Does Brightwave] [ship/deliver/sell] [to/in] [Ireland/Canada/Norway/Switzerland]? [I/We]
[want/would like] [the/a few] [{product} units/{product}s]. | [Is there/Will there be] [a/any]
[Black
Friday/holiday/student] [discount/deal/offer] on the {product} [this year/at the moment]? |
[Can/Could] I
[pre-order/reserve] {n} [{product} units/{product}s] [for/before] {month}?
@context BILLING-REFUND
The charge of ${amount} [shows up/appears/is listed] twice on my statement from {date}. | I paid
with
[the/my] card ending in {last4} if that helps. | Your chat bot [told me/said] the refund takes
{days}
days but it [has been/is] [longer/way longer/{n} weeks now]. | I only [ordered/bought/wanted] one
{product}, not {n}. |
My bank says the second payment of ${amount} [is not/isn't] pending any more, it went through on
{date}. | The discount code {code} was not applied either, so I overpaid by ${amount}.
@context SHIPPING-DELAY
The tracking page from {carrier} has [said/shown/been stuck on] 'in transit' since {date}. | I
[chose/
picked/paid for] express delivery [and paid/at] ${amount} extra [for it/]. | It was meant to be a
[birthday/anniversary/housewarming] present for my {relative}, so timing matters. | Nobody left a
card
and the neighbours [on both sides/next door/across the road] have nothing either. | {carrier} told
me
to contact the sender, so here I am. | I took {n} hours off work on {weekday} to wait for the
courier.
@context RETURNS
The {product} has a [crack/dent/scratch] along the [side/top/front] and makes a [buzzing/rattling]
noise. | I still have the original box and all the [cables/parts/screws]. | I [bought/ordered/got]
it {days} days ago, so I [should still be/am still/think I'm still] [inside/within] the return
[window/period]. | It [would not/does not/won't] fit the [bracket/mount/wall plate] in my {room} at
all.
| The colour is also [different from/nothing like] the [photos/pictures] on the {store}
[listing/page]. | My {relative} [bought/gave] me the same [thing/one] on {date}, so I have two now.
@context ACCOUNT-ACCESS
I tried the reset link {n} times on [both/] my phone and [my/] laptop. | The app just says 'session
expired' and [sends/kicks] me back to the login [page/screen] after {n} seconds. | I have {n}
[devices/gadgets] on this account and none of them [can be controlled/respond] [now/any more]. | My
old [work/university] address was closed
when
I [changed jobs/graduated] in {month}. | The verification text goes to a number I gave up on {date}.
|
Support article {code} did not help, the button it mentions is not in app version {fw}.
@context TECH-SUPPORT
[It is/It's] on firmware {fw} and [my router is/the router is/I use] a {router}. | I already
[power-cycled/restarted/rebooted] it
{n} times and moved it closer to the router. | The device is in the {room}, about {n} metres from
the
[access point/router/mesh node]. | [Everything else/Every other device] [on my network/at home]
works fine, even the old
{product2}.
| It started right after the {weekday} night update, the log shows error {code}. | I
[switched/moved/set] the {router} to the 2.4 GHz band like the guide says, [no change/nothing
changed/still the same].
@context SALES-INQUIRY
We are [furnishing/renovating/fitting out] {n} [flats/apartments/holiday homes] and want the same
setup in each. | A [colleague/friend/neighbour] recommended the {product} after using it for {n}
months. | Budget-wise we are looking at [roughly/about/under] ${amount} per unit. | We [would/will]
need [delivery/them] before {date} if [possible/you can]. | We already run {n} {product2} units from
you at our {room}
showroom. | Our facilities team asked for the spec sheet with reference {code}.
@generic
I [have been/'ve been] a customer for {n} years and never had [an issue/a problem/any trouble]
before. | I set it up last {weekday} [following/using/with] the quick-start guide. | Honestly I am
running out of patience here. | I hope someone can
sort this out before {weekday}. | My {relative} already called once but got disconnected after {n}
minutes. | I attached a [screenshot/photo/video] but [not sure/I don't know if] it came through. |
The Brightwave app is on version
{fw} from the app store. | I'm writing from my {relative}'s laptop because mine is in repair. |
This is my {ordinal} message about it. | We are moving house on {date} so the timing is tight. |
[Thanks/Thank you] in advance. | [Not sure/No idea] if this is the right [place/address] to ask.
@ack
Thanks for getting in touch, and sorry for the trouble with your {product}. | I'm sorry to hear
that,
let me look into it for you right away. | Thank you for the details, I can see your ticket here. |
Apologies for the inconvenience, I understand how frustrating this is. | Thanks for your patience
while I checked your account. | Thanks for writing in about order {order}. | I'm sorry the {product}
has let you down, that's not the experience we want for you. | Thank you, I've pulled up your
{product} order from {date}. | Sorry about the wait over the {weekday} rush, and thanks for the
detail. | Thanks, that helps me narrow it down.
@ask BILLING-REFUND
Could you confirm the last four digits of the card that was charged? | Can you tell me the exact
date
and amount of the second charge? | Did you pay by card, PayPal or bank transfer? | Is the second
charge still marked as pending with your bank?
@ask SHIPPING-DELAY
Could you confirm the delivery postcode on the order? | Can you check whether the {carrier} tracking
shows a depot scan? | Was anyone at home on {weekday} to receive it? | Could you check with the
building reception or a safe place?
@ask RETURNS
Could you send a photo of the damage and of the label on the box? | Would you prefer a refund or an
exchange for a new {product}? | Is the serial number on the base readable? | Do you still have the
receipt e-mail from {date}?
@ask ACCOUNT-ACCESS
Could you confirm the e-mail address you used when you registered? | When did you last manage to
sign
in successfully? | Which app version do you see under Settings > About? | Have you checked the spam
folder for the reset e-mail?
@ask TECH-SUPPORT
Is the status light solid or blinking, and in which colour? | Could you tell me which firmware
version
the app shows for the {product}? | Does the {product} reconnect if you restart the {router}? | How
far
is the {product} from the router, roughly?
@ask SALES-INQUIRY
How many units are you planning to order, and by when? | Is this for a business or for personal use?
| Do you need installation, or will your team handle it? | Which smart-home platform do you use
today?
@follow BILLING-REFUND
The second charge was on {date} for ${amount}. | Yes, [same card/the same one], it is the one
ending in {last4}. | I paid by [card/debit card], the statement line says BRIGHTWAVE*{code}. | [It
is not/It's not/Not] pending, both payments went through on {date}.
@follow SHIPPING-DELAY
The last scan was at the {carrier} depot [on/in {city} on] {date}. | The postcode is correct, I
[checked/double-checked] the confirmation e-mail. | I was home all {weekday} and nobody [rang/came
by/knocked]. | Reception has nothing and there is no [safe-place/delivery] photo in the app.
@follow RETURNS
I would prefer a refund please, I am going with [a different model/another brand/the Pro version]. |
An exchange is fine if you can ship it [this week/before {weekday}/soon]. | Photos are attached, the
serial is {code}. | Yes, I [have/still have/kept] the receipt from {date}.
@follow ACCOUNT-ACCESS
The last time it worked was [around/on/maybe] {date}. | I registered with my old [address/work
address/e-mail], it is probably that one. | It says version {fw}. | Nothing in [spam/junk], I
checked {n} times.
@follow TECH-SUPPORT
It is blinking [orange/red/white], roughly every {n} seconds. | The app says firmware {fw}, and the
{router} was rebooted [this morning/last night/an hour ago]. | Restarting the [router/hub] helps for
[about/maybe] {n} hours, then it drops again. | Maybe {n} metres, there [is one wall/are two walls]
in between.
@follow SALES-INQUIRY
Around {n} units, ideally delivered before {date}. | It is for our [property management/holiday
rental/small office] business. | Our own team will install them over {n} weekends. | We use [Google
Home/Alexa/Apple Home/SmartThings] at the moment.
@resolve BILLING-REFUND
I have refunded the duplicate charge of ${amount}; it will reach your card within {days} business
days. | The refund for order {order} is approved and you'll get a confirmation e-mail shortly. |
I've
reversed the second payment and applied the missing discount, ${amount} in total. | Our billing team
confirmed the double charge; the money is on its way back to you.
@resolve SHIPPING-DELAY
I've opened an investigation with {carrier} and we'll send a replacement if the parcel isn't found
within {days} days. | Order {order} has been reshipped with express delivery at no cost. | The
courier confirmed a delivery attempt failed; it goes out again on {weekday}. | I've refunded the
express fee of ${amount} and flagged the parcel as lost.
@resolve RETURNS
I've sent a prepaid return label for order {order} to your e-mail; drop the parcel at any {carrier}
point. | Your exchange is booked and the new {product} ships once the return is scanned. | The
refund
of ${amount} is issued as soon as the parcel reaches our warehouse. | No need to send it back, a
replacement {product} leaves our warehouse on {weekday}.
@resolve ACCOUNT-ACCESS
I've unlocked your account and sent a fresh reset link valid for {n} hours. | The e-mail on your
account is updated; please sign in again on every device. | I've reset two-factor on your account;
you can set it up again from the app. | I've signed out every session, please log in again and
change
your password.
@resolve TECH-SUPPORT
Please hold the reset button for {n} seconds, then re-add the {product} in the app; firmware {fw}
fixes the Wi-Fi drop-outs. | I've pushed firmware {fw} to your {product}; it should reconnect within
{n} minutes. | This looks like a hardware fault, so I've arranged a free replacement {product}. |
Please set a fixed 2.4 GHz channel on the {router}; that resolves this for most customers.
@resolve SALES-INQUIRY
For {n} units we can offer a volume discount; I've forwarded your request to our business team. |
Yes, the {product} works with Apple Home, Google Home and Alexa. | I've sent the spec sheet and a
quote valid until {date} to your e-mail. | Our business team will call you on {weekday} to plan the
rollout of {n} units.
@extra
Your case number is {case}. | I've added a note to order {order} as well. | You'll get an update
from
us by {date} at the latest. | As an apology I've added a ${credit} credit to your account. | I've
linked this to case {case} so nobody asks you again. | If it happens again, just reply to this
thread and quote {case}.
@close
Is there anything else I can help you with? | Have a great day! | Let us know if anything else comes
up. | Thanks for choosing Brightwave Home. | Enjoy the rest of your {weekday}! | Have a lovely
evening. | Take care. | Happy to help with anything else.
@custshort
Thanks for the quick reply. | OK. | Sure. | Right, thanks. | Got it. | Fine, thank you.
"""


def _pools(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for block in text.split("\n@")[1:]:
        head, _, body = block.partition("\n")
        out[head.strip()] = [s.strip() for s in " ".join(body.split("\n")).split(" | ")]
    for queue, problems in S.QUEUES.items():  # the quickstart's problem lines join this pool
        out[f"problem {queue}"] = [*problems, *out.get(f"problem {queue}", [])]
    return out


P = _pools(_POOL_TEXT)
_ALT = re.compile(r"\[([^\[\]]*/[^\[\]]*)\]")
_CASUAL = [("I am ", "im "), ("I'm ", "im "), ("you ", "u "), ("please", "pls"), ("don't", "dont"),
           ("can't", "cant"), ("doesn't", "doesnt"), ("because", "cuz"), ("thanks", "thx")]
FILLERS = ["really", "honestly", "still", "again", "just", "actually", "basically", "literally",
           "now", "even", "also", "so", "totally", "kind of", "to be honest", "like", "btw"]
_NO_FILLER_AFTER = {"the", "a", "an", "my", "your", "our", "to", "of", "for", "on", "in", "at", "by",
                    "from", "with", "is", "i", "it", "and", "or", "every", "this", "that"}
CUST_SIGNOFF = ["Thanks", "Thanks!", "Thank you", "Cheers", "Best regards", "Kind regards"]
GREET = ["Hi", "Hello", "Hi there", "Good morning", "Dear Brightwave team", "Hey"]

EXTRA = ["Any update on this?", "I also tried unplugging it for a minute.",
         "Please get back to me soon.", "Sorry for the second message."]
PII_SENTENCES = {
    "emails": ["You can reach me at {v}.", "My e-mail is {v} if you need it.",
               "Please send the label to {v}."],
    "phones": ["My number is {v}.", "Call me back on {v} please.", "You can also text {v}."],
    "cards": ["The card I used is {v}.", "Card number {v}, exp 09/28."],
    "ibans": ["Please refund to my bank account {v}.", "My IBAN is {v}."],
    "ipv4": ["My public IP is {v} if that helps.", "The hub shows the WAN address {v}."],
    "ipv6": ["The router lists the device as {v}.", "IPv6 address from the app: {v}."],
    "addresses": ["I live at {v}.", "Ship it to {v} please.", "The delivery address is {v}."],
}
PII_RATES = {"emails": 0.25, "phones": 0.2, "cards": 0.06, "ibans": 0.05, "ipv4": 0.06,
             "ipv6": 0.03, "addresses": 0.1}
FOREIGN = {
    "german": {"user": ["Hallo, mein {product} verbindet sich seit gestern nicht mehr mit dem WLAN. "
                        "Ich habe ihn schon zweimal neu gestartet, aber es hilft nichts.",
                        "Guten Tag, ich wurde für die Bestellung {order} doppelt belastet und "
                        "möchte bitte das Geld zurück.",
                        "Meine Lieferung ist immer noch nicht angekommen, obwohl sie letzte Woche "
                        "kommen sollte. Können Sie bitte nachsehen?"],
               "assistant": ["Vielen Dank für Ihre Nachricht. Bitte setzen Sie das Gerät zurück und "
                             "verbinden Sie es erneut über die App.",
                             "Es tut uns leid für die Unannehmlichkeiten. Wir haben die Erstattung "
                             "veranlasst, sie dauert einige Werktage."]},
    "spanish": {"user": ["Hola, mi {product} no se conecta a la red desde ayer. Ya lo reinicié "
                         "dos veces y sigue sin funcionar.",
                         "Buenos días, me cobraron dos veces el pedido {order} y quiero que me "
                         "devuelvan el dinero, por favor.",
                         "Mi paquete todavía no ha llegado y el seguimiento no se mueve desde "
                         "hace una semana. ¿Pueden revisarlo?"],
                "assistant": ["Gracias por escribirnos. Por favor, restablezca el dispositivo y "
                              "vuelva a conectarlo desde la aplicación.",
                              "Lamentamos las molestias. Hemos tramitado el reembolso y llegará "
                              "en unos días hábiles."]},
}
MASH = ["asdfjkl;asdfjkl", "qwertyuiop", "jjjjjkkkkklll", "sdfsdf sdfsdf", "zxcvbnm,./",
        "hjkl hjkl hjkl", "aaaaaaaaaaaa", "test test 123 asdf"]
STREETS = ["Maple", "Oak", "Cedar", "Elm", "Willow", "Harbour", "Orchard", "Station", "Mill",
           "Church", "Victoria", "Park", "Highland", "Lakeview"]
STREET_TYPES = ["Street", "Avenue", "Road", "Lane", "Drive", "Boulevard", "Court", "Way"]
CITIES = ["Springfield, IL 62704", "Portland, OR 97205", "Bristol BS1 4DJ", "Leeds LS1 5AB",
          "Austin, TX 78701", "Dublin D02 X285", "Manchester M1 2HF"]
DE_STREETS = ["Lindenstraße", "Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße"]
PHONE_FORMATS = ["+44 20 7946 0{d3}", "+44 7700 900{d3}", "+1 {a3}-555-0{d3}",
                 "+1 ({a3}) 555-0{d3}", "+49 30 {d4}{d3}", "+49 151 {d4} {d4}",
                 "+33 6 {d2} {d2} {d2} {d2}", "+34 6{d2} {d3} {d3}", "+353 1 {d3} {d4}",
                 "+61 4{d2} {d3} {d3}", "+81 3-{d4}-{d4}", "+91 98{d3} {d2}{d3}",
                 "0044 20 7946 0{d3}"]
IBAN_BBAN = {"DE": "8n10n", "GB": "4a14n", "FR": "10n11c2n", "ES": "20n", "NL": "4a10n",
             "IT": "1a10n12c"}
_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
IP4_FIRST = [23, 37, 46, 62, 78, 81, 86, 91, 109, 145, 151, 176, 185, 203, 212]


# ------------------------------------------------------------------------------- PII values
def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def make_card(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:  # Amex 15 digits, grouped 4-6-5
        body = rng.choice("47")
        body = "3" + body + "".join(rng.choice(string.digits) for _ in range(12))
        n = body + luhn_digit(body)
        return rng.choice([f"{n[:4]} {n[4:10]} {n[10:]}", n])
    prefix = "4" if kind < 0.6 else f"5{rng.randint(1, 5)}"
    body = prefix + "".join(rng.choice(string.digits) for _ in range(15 - len(prefix)))
    n = body + luhn_digit(body)
    groups = [n[i:i + 4] for i in range(0, 16, 4)]
    return rng.choice([" ".join(groups), "-".join(groups), n])


def make_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_BBAN))
    bban, num = "", ""
    for ch in IBAN_BBAN[country]:
        if ch.isdigit():
            num += ch
            continue
        pool = {"n": string.digits, "a": string.ascii_uppercase,
                "c": string.digits + string.ascii_uppercase}[ch]
        bban += "".join(rng.choice(pool) for _ in range(int(num)))
        num = ""
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    iban = f"{country}{check:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


def make_phone(rng: random.Random) -> str:
    fmt = rng.choice(PHONE_FORMATS)
    return fmt.format(d2=f"{rng.randint(10, 99)}", d3=f"{rng.randint(100, 999)}",
                      d4=f"{rng.randint(1000, 9999)}", a3=f"{rng.randint(201, 989)}")


def make_ipv4(rng: random.Random) -> str:
    return f"{rng.choice(IP4_FIRST)}.{rng.randint(1, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}"


def make_ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randint(0, 0xffff):x}" for _ in range(6)]
    if rng.random() < 0.5:
        return f"2a02:{groups[0]}:{groups[1]}:{groups[2]}::{groups[3]}"
    return "2001:" + ":".join(groups) + f":{rng.randint(1, 0xffff):x}"


def make_address(rng: random.Random) -> tuple[str, str]:
    """(street line = the truth string, full address as written)."""
    if rng.random() < 0.15:
        street = f"{rng.choice(DE_STREETS)} {rng.randint(1, 120)}"
        return street, f"{street}, {rng.randint(10115, 99999)} Berlin"
    street = f"{rng.randint(2, 2999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"
    if rng.random() < 0.3:
        street += f", Apt {rng.randint(1, 40)}{rng.choice('ABCD')}"
    return street, f"{street}, {rng.choice(CITIES)}"


def make_email(rng: random.Random, first: str, last: str) -> str:
    f, la = first.lower(), last.lower()
    user = rng.choice([f"{f}.{la}", f"{f}{la}{rng.randint(1, 99)}", f"{f[0]}{la}",
                       f"{f}_{la}", f"{f}+orders", f"{la}.{f}"])
    return f"{user}@{rng.choice(['example.com', 'example.org', 'mail.example.net', 'example.co.uk'])}"


# ----------------------------------------------------------------------------- conversations
@dataclass
class Conv:
    tid: str
    fmt: str
    kind: str                                   # clean | junk | exact_dup | near_dup | contaminated
    turns: list[list[str]]                      # [role, text]; user/assistant/bot/tool
    name: str = ""
    email: str = ""
    product: str = ""
    queue: str = ""
    agent: str = ""
    created: str = ""
    pii: dict[str, list[str]] = field(default_factory=dict)
    style: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)  # junk kind / of / edit / eval_id


_DRAW = {
    "n": lambda r: r.randint(2, 12), "days": lambda r: r.randint(2, 21),
    "amount": lambda r: f"{r.randint(19, 499)}.{r.choice(['00', '49', '95', '99'])}",
    "credit": lambda r: r.choice(["10", "15", "20", "25"]), "month": lambda r: r.choice(MONTHS),
    "date": lambda r: f"{r.randint(1, 28)} {r.choice(MONTHS)}",
    "last4": lambda r: f"{r.randint(0, 9999):04d}",
    "code": lambda r: f"{r.choice('ABEKRX')}{r.randint(100, 9999)}",
    "fw": lambda r: f"{r.randint(2, 5)}.{r.randint(0, 19)}.{r.randint(0, 9)}",
    "router": lambda r: r.choice(ROUTERS), "room": lambda r: r.choice(ROOMS),
    "carrier": lambda r: r.choice(CARRIERS), "store": lambda r: r.choice(["Amazon", "website", "eBay"]),
    "relative": lambda r: r.choice(["sister", "dad", "mum", "partner", "son", "neighbour"]),
    "ordinal": lambda r: r.choice(["second", "third", "fourth"]),
    "case": lambda r: f"{r.randint(1000000, 9999999)}",
    "weekday": lambda r: r.choice(["Monday", "Tuesday", "Wednesday", "Friday", "Saturday", "Sunday"]),
    "product2": lambda r: r.choice(S.PRODUCTS),
    "city": lambda r: r.choice(["Leeds", "Leipzig", "Lyon", "Cork", "Utrecht"]),
}
_STICKY = frozenset({"fw", "router", "carrier", "case", "product2", "room"})


class Slots(dict):
    """Template values of one conversation: product/order fixed, firmware/router/carrier/case drawn
    once, numbers and dates drawn per use (so sentences vary)."""

    def __init__(self, rng: random.Random, product: str, order: str):
        super().__init__(product=product, order=order)
        self.rng = rng

    def __missing__(self, key: str) -> str:
        value = str(_DRAW[key](self.rng))
        if key in _STICKY:
            self[key] = value
        return value


def _noise(rng: random.Random, text: str, fmt: str) -> str:
    """Export noise on a PII-free sentence (HTML entities, mojibake, odd spaces, curly quotes)."""
    r = rng.random()
    if fmt == "eval":  # held-out items are clean
        return text
    if r < 0.12:
        text = text.replace("'", "\u2019")
    elif r < 0.2 and ("'" in text or "é" in text):
        text = text.replace("'", "\u2019").encode("utf-8").decode("cp1252", errors="replace")
    elif r < 0.26 and fmt == "csv":
        text = text.replace("&", "&amp;").replace("'", "&#39;")
    elif r < 0.32:
        text = text.replace(" ", rng.choice(["  ", "\u00a0", " \u200b"]), 2)
    return text


def say(rng: random.Random, template: str, sl: Slots) -> str:
    """A pool template with its [a/b/c] alternatives picked and its {slots} filled."""
    return _ALT.sub(lambda m: rng.choice(m.group(1).split("/")).strip(), template).format_map(sl)


def _voice(rng: random.Random, text: str, voice: str) -> str:
    """The customer's writing habits: filler words everywhere; casual (lower case, 'u', 'pls', no
    full stops) or typos."""
    words = text.split(" ")
    for _ in range(max(1, len(words) // 10 + (rng.random() < 0.4)) if len(words) > 5 else 0):
        for _try in range(4):  # a spot where a filler reads naturally enough
            at = rng.randint(1, len(words) - 1)
            if words[at - 1].lower() not in _NO_FILLER_AFTER:
                words.insert(at, rng.choice(FILLERS))
                break
    text = " ".join(words)
    if voice == "casual":
        text = text[0].lower() + text[1:]
        for old, new in _CASUAL:
            text = text.replace(old, new)
        return text[:-1] if text.endswith(".") else text
    if voice == "typos":
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) >= 5 and w.isalpha() and rng.random() < 0.12:
                j = rng.randint(1, len(w) - 3)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        text = " ".join(words)
    return text


def _after(hello: str, text: str) -> str:
    """'Hi Maria, ' + 'Thanks …' → 'Hi Maria, thanks …' (a leading 'I' keeps its capital)."""
    if not hello or text.startswith(("I ", "I'")):
        return hello + text
    return hello + text[0].lower() + text[1:]


def _plant(rng: random.Random, conv: Conv) -> list[str]:
    """Sentences carrying planted PII (recorded in conv.pii) at realistic per-type rates."""
    out: list[str] = []
    for ptype, rate in PII_RATES.items():
        if rng.random() >= rate:
            continue
        if ptype == "addresses":
            value, written = make_address(rng)
        else:
            value = written = conv.email if ptype == "emails" else {
                "phones": make_phone, "cards": make_card, "ibans": make_iban, "ipv4": make_ipv4,
                "ipv6": make_ipv6}[ptype](rng)
        out.append(rng.choice(PII_SENTENCES[ptype]).format(v=written))
        conv.pii.setdefault(ptype, []).append(value)
    return out


def make_conversation(rng: random.Random, tid: str, fmt: str, *, pii: bool = True,
                      rich: bool = False) -> Conv:
    """One good English support conversation (1-3 exchanges; `rich`: 2-3 and a longer first
    message, as curated eval items are), PII planted at realistic rates."""
    queue = rng.choice(sorted(S.QUEUES))
    first, last = rng.choice(FIRST), rng.choice(LAST)
    sl = Slots(rng, rng.choice(S.PRODUCTS), f"#{rng.randint(100000, 999999)}")
    conv = Conv(tid=tid, fmt=fmt, kind="clean", turns=[], name=f"{first} {last}",
                email=make_email(rng, first, last), product=sl["product"], queue=queue,
                agent=rng.choice(AGENTS), pii={"names": [f"{first} {last}"]} if pii else {},
                created=f"2026-{rng.randint(9, 11):02d}-{rng.randint(1, 28):02d}T"
                        f"{rng.randint(7, 21):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z")
    if not pii:
        conv.name = conv.email = ""
    voice = rng.choice(["plain", "plain", "plain", "casual", "typos"])
    problem = say(rng, rng.choice(P[f"problem {queue}"]), sl)
    if rng.random() < 0.3:
        problem = rng.choice(["So ", "Quick question: ", "Hoping you can help - ", "Ok so ",
                              "Not sure who to ask, but "]) + problem[0].lower() + problem[1:]
    sentences = [problem[0].upper() + problem[1:] + ("" if problem[-1] in ".?!" else ".")]
    sentences += [say(rng, x, sl) for x in rng.sample(P[f"context {queue}"], k=rng.randint(1 + rich, 3))]
    if rng.random() < 0.5 or rich:
        sentences.insert(rng.randint(1, len(sentences)), say(rng, rng.choice(P["generic"]), sl))
    if rng.random() < 0.25:
        sentences.append(rng.choice(S.URGENT))
    user_first = " ".join(_noise(rng, _voice(rng, x, voice), fmt) for x in sentences)
    if rng.random() < 0.7:
        user_first = rng.choice(GREET) + rng.choice([", ", "! ", ",\n", "\n"]) + user_first
    planted = _plant(rng, conv) if pii else []
    exchanges = rng.choice([2, 3] if rich else [1, 2, 2, 3])
    turns: list[list[str]] = [["user", user_first]]
    if planted and (exchanges == 1 or rng.random() < 0.6):
        turns[0][1] += " " + " ".join(planted)
        planted = []
    signed = pii and fmt in ("csv", "mbox", "messages") and rng.random() < 0.35
    if signed:
        turns[0][1] += f"\n\n{rng.choice(CUST_SIGNOFF)},\n{rng.choice([first, conv.name])}"
    if fmt == "txt":  # a call transcript names the caller in the speaker label, or not at all
        conv.style["name_label"] = pii and rng.random() < 0.6
    greet_name = pii and rng.random() < 0.7 and (
        signed or fmt not in ("messages", "txt") or conv.style.get("name_label", False))
    if signed or greet_name:
        conv.pii["first_names"] = [first]
    hello = f"{rng.choice(['Hi', 'Hello', 'Dear'])} {first}, " if greet_name else \
        rng.choice(["Hi, ", "Hello, ", "Hi there, ", ""])
    picks = rng.sample(range(len(P[f"ask {queue}"])), k=exchanges - 1)  # answer i answers ask i
    asks, follows = [P[f"ask {queue}"][j] for j in picks], [P[f"follow {queue}"][j] for j in picks]
    for i in range(exchanges - 1):
        ack = say(rng, rng.choice(P["ack"]), sl)
        turns.append(["assistant", (_after(hello, ack) if i == 0 else ack) + " " +
                      say(rng, asks[i], sl)])
        follow = _noise(rng, _voice(rng, say(rng, follows[i], sl), voice), fmt)
        if rng.random() < 0.3:
            follow = rng.choice(P["custshort"]) + " " + follow
        turns.append(["user", follow + (" " + " ".join(planted) if planted else "")])
        planted = []
    final = say(rng, rng.choice(P[f"resolve {queue}"]), sl)
    if rng.random() < 0.6:
        final += " " + say(rng, rng.choice(P["extra"]), sl)
    final += " " + say(rng, rng.choice(P["close"]), sl)
    turns.append(["assistant", _after(hello, final) if exchanges == 1 else final])
    conv.turns = turns
    return conv


def make_junk(rng: random.Random, tid: str, fmt: str, kind: str) -> Conv:
    """A record that refine must drop: empty, base64 blob, keyboard mash, German/Spanish,
    no agent reply, bot/tool turns only, or one line pasted over and over."""
    conv = make_conversation(rng, tid, fmt)
    conv.kind, conv.detail = "junk", {"junk": kind}
    if kind != "no_agent_reply":
        conv.pii = {"names": [conv.name], "emails": [conv.email]}  # kept where rendered (headers)
    sl = Slots(rng, conv.product, f"#{rng.randint(100000, 999999)}")
    if kind == "empty":
        conv.turns = [["user", rng.choice(["", " ", "\n"])], ["assistant", ""]]
    elif kind == "base64":
        blob = base64.b64encode(rng.randbytes(rng.randint(300, 900))).decode()
        conv.turns = [["user", blob], ["assistant", base64.b64encode(rng.randbytes(200)).decode()]]
    elif kind == "mash":
        conv.turns = [["user", " ".join(rng.choices(MASH, k=rng.randint(1, 4)))],
                      ["assistant", rng.choice(MASH)]]
    elif kind in FOREIGN:
        conv.turns = [["user", rng.choice(FOREIGN[kind]["user"]).format_map(sl)],
                      ["assistant", rng.choice(FOREIGN[kind]["assistant"])]]
    elif kind == "no_agent_reply":
        conv.turns = [t for t in conv.turns if t[0] == "user"][:2]
    elif kind == "tool_only":
        conv.turns = [["bot", "Hi! I'm Brighty, the Brightwave assistant. What can I help with?"],
                      ["tool", json.dumps({"lookup": "order", "order": sl["order"],
                                           "status": "shipped"})],
                      ["bot", "The visitor left the chat."]]
    elif kind == "repetitive":
        line = rng.choice(S.QUEUES[conv.queue]).format_map(sl)
        conv.turns = [["user", "\n".join([line] * rng.randint(15, 30))],
                      ["assistant", rng.choice(P["close"]).format_map(sl)]]
    return conv


def apply_edit(rng: random.Random, conv: Conv, edit: str) -> None:
    """Light edit of the first user turn: a typo, one extra sentence, or another greeting."""
    text = conv.turns[0][1]
    protected = {v for vals in conv.pii.values() for v in vals}
    if edit == "typo":
        parts = text.split(" ")
        spots = [(i, j) for i, w in enumerate(parts) if len(w) >= 6 and w.isalpha()
                 and not any(w in p for p in protected)
                 for j in range(1, len(w) - 2) if w[j].lower() != w[j + 1].lower()]
        if spots:
            i, j = rng.choice(spots)  # swap two different letters: always a visible change
            w = parts[i]
            parts[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            conv.turns[0][1] = " ".join(parts)
            return
        edit = "extra_sentence"
    if edit == "extra_sentence":  # into the message body, before any sign-off block
        body, sep, signoff = text.partition("\n\n")
        conv.turns[0][1] = body.rstrip() + " " + rng.choice(EXTRA) + sep + signoff
    elif edit == "greeting":
        for g in sorted(GREET, key=len, reverse=True):
            if text.startswith(g):
                text = text[len(g):].lstrip(",! \n")
                break
        conv.turns[0][1] = rng.choice(["Hello again,", "Hi team,", "Hiya,"]) + " " + text


def style_for(rng: random.Random, conv: Conv) -> None:
    """Format-specific render choices, drawn once so that rendering is a pure function."""
    st = conv.style
    st.setdefault("name_label", False)
    st["bot_ack"] = rng.random() < 0.3
    st["split"] = rng.random() < 0.35
    st["plain_html"] = rng.random() < 0.2
    st["tool"] = rng.random() < 0.25
    st["agent_label"] = rng.random() < 0.6
    st["system"] = rng.random() < 0.3
    st["iphone"] = rng.random() < 0.3
    st["outlook"] = rng.random() < 0.3
    st["disclaimer"] = rng.random() < 0.25
    st["multipart"] = rng.random() < 0.2
    st["inaudible"] = rng.random() < 0.3
    st["minute"] = rng.randint(0, 50)
    if conv.fmt == "mbox" and conv.kind == "clean" and conv.name and rng.random() < 0.5:
        phone = make_phone(rng)
        street, full = make_address(rng)
        st["signature"] = f"--\n{conv.name}\n{phone}\n{full}"
        conv.pii.setdefault("phones", []).append(phone)
        conv.pii.setdefault("addresses", []).append(street)


# ---------------------------------------------------------------------------------- rendering
def _lines(text: str) -> str:
    return text.replace("\n", "\n  ")


def render_csv(conv: Conv) -> list[str]:
    st, out = conv.style, []
    for i, (role, text) in enumerate(conv.turns):
        label = {"user": "Customer", "assistant": f"Agent ({conv.agent})" if st["agent_label"]
                 else "Agent", "bot": "Bot", "tool": "Tool"}[role]
        out.append(f"{label}: {_lines(text)}")
        if i == 0 and st["bot_ack"] and role == "user":
            out.append("Bot: Thanks for contacting Brightwave Home! An agent will reply shortly.")
    channel = "phone" if st["minute"] % 3 == 0 else ("email" if st["minute"] % 3 == 1 else "web")
    return [conv.tid, conv.created[:10], conv.name, conv.email, channel, conv.product,
            "solved" if conv.turns[-1][0] == "assistant" else "open", "\n".join(out)]


def _html(text: str, plain: bool) -> str:
    if plain:
        return text
    paras = [html.escape(p, quote=False).replace("\n", "<br>") for p in text.split("\n\n")]
    return "".join(f"<p>{p}</p>" for p in paras).replace("  ", " &nbsp;")


def render_widget(conv: Conv) -> dict[str, Any]:
    st, events = conv.style, []
    if conv.kind != "junk" or conv.detail.get("junk") != "tool_only":
        events.append({"author": {"type": "bot", "name": "Brighty"},
                       "body": {"html": BOT_HELLO}})
    authors = {"user": {"type": "visitor"}, "assistant": {"type": "agent", "name": conv.agent},
               "bot": {"type": "bot", "name": "Brighty"}, "tool": {"type": "tool", "name": "orders-api"}}
    for i, (role, text) in enumerate(conv.turns):
        chunks = [text]
        if role == "user" and st["split"] and ". " in text and "\n" not in text:
            head, _, tail = text.partition(". ")
            chunks = [head + ".", tail]
        for chunk in chunks:
            events.append({"author": authors[role], "body": {"html": _html(chunk, st["plain_html"])}})
        if i == 0 and st["tool"] and role == "user":
            events.append({"author": authors["tool"], "body": {
                "html": TOOL_HTML}})
    visitor = {"name": conv.name, "email": conv.email} if conv.name else {"name": None}
    return {"conversation": {"ref": conv.tid, "started_at": conv.created, "channel": "chat",
                             "product": conv.product, "visitor": visitor},
            "events": events}


def render_messages(conv: Conv) -> dict[str, Any]:
    msgs = [{"role": "system", "content": SYSTEM}] if conv.style["system"] else []
    msgs += [{"role": r, "content": t} for r, t in conv.turns if r in ("user", "assistant")]
    return {"id": conv.tid, "messages": msgs,
            "metadata": {"channel": "assistant-handoff", "product": conv.product}}


def _mail_date(conv: Conv, k: int) -> tuple[str, str]:
    """(RFC 2822 Date header, mbox envelope date) of the k-th mail of a thread."""
    dt = datetime.fromisoformat(conv.created.replace("Z", "+00:00"))
    dt += timedelta(hours=3 * k, minutes=conv.style["minute"] * k)
    day, mon = _DAYS[dt.weekday()], _MONS[dt.month - 1]
    clock = f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return (f"{day}, {dt.day:02d} {mon} {dt.year} {clock} +0000",
            f"{day} {mon} {dt.day:2d} {clock} {dt.year}")


def render_mbox(conv: Conv) -> str:
    st, out, prev = conv.style, [], None
    cust = f"{conv.name} <{conv.email}>" if conv.name else f"<{conv.email or 'customer@example.com'}>"
    subject = f"[Ticket {conv.tid}] {conv.product} - {conv.queue.replace('-', ' ').title()}"
    turns = [t for t in conv.turns if t[0] in ("user", "assistant")]
    for k, (role, text) in enumerate(turns):
        sender = cust if role == "user" else f"Brightwave Support <{SUPPORT}>"
        date, envelope = _mail_date(conv, k)
        body = text
        if role == "assistant":
            body += f"\n\nKind regards,\n{conv.agent}\nBrightwave Home Support\n{HELP_URL}"
            if st["disclaimer"]:
                body += ("\n\nCONFIDENTIALITY NOTICE: This e-mail and any attachments are "
                         "confidential and intended solely for the addressee.")
        elif st.get("signature"):
            body += "\n\n" + st["signature"]
        elif st["iphone"]:
            body += "\n\nSent from my iPhone"
        if prev is not None:
            p_sender, p_date, p_text = prev
            if st["outlook"]:
                body += (f"\n\n-----Original Message-----\nFrom: {p_sender}\nSent: {p_date}\n"
                         f"To: {cust if p_sender.startswith('Brightwave') else SUPPORT}\n"
                         f"Subject: {subject}\n\n{p_text}")
            else:
                quoted = "\n".join("> " + ln if ln else ">" for ln in p_text.split("\n"))
                body += f"\n\nOn {p_date}, {p_sender} wrote:\n{quoted}"
        prev = (sender, date, body)
        envelope_from = SUPPORT if role == "assistant" else conv.email or "customer@example.com"
        head = [f"From {envelope_from} {envelope}",
                f"From: {sender}", f"To: {SUPPORT if role == 'user' else cust}",
                f"Subject: {'Re: ' if k else ''}{subject}", f"Date: {date}",
                f"Message-ID: <{conv.tid}.{k + 1}@helpdesk.brightwave-home.example>"]
        if k:
            refs = " ".join(f"<{conv.tid}.{j + 1}@helpdesk.brightwave-home.example>" for j in range(k))
            head += [f"In-Reply-To: <{conv.tid}.{k}@helpdesk.brightwave-home.example>",
                     f"References: {refs}"]
        head += [f"X-Ticket-ID: {conv.tid}", "MIME-Version: 1.0"]
        safe = "\n".join(">" + ln if ln.startswith("From ") else ln for ln in body.split("\n"))
        if st["multipart"] and role == "assistant":
            b = f"=_bw_{conv.tid}_{k}"
            out.append("\n".join(head + [f'Content-Type: multipart/alternative; boundary="{b}"', "",
                                         f"--{b}", 'Content-Type: text/plain; charset="utf-8"',
                                         "Content-Transfer-Encoding: 8bit", "", safe, f"--{b}",
                                         'Content-Type: text/html; charset="utf-8"',
                                         "Content-Transfer-Encoding: 8bit", "", _html(safe, False),
                                         f"--{b}--", ""]))
        else:
            out.append("\n".join(head + ['Content-Type: text/plain; charset="utf-8"',
                                         "Content-Transfer-Encoding: 8bit", "", safe, ""]))
    return "\n".join(out) + "\n"


def render_txt(conv: Conv) -> str:
    st, m = conv.style, conv.style["minute"]
    hh = int(conv.created[11:13])
    lines = ["=" * 40, f"Call {conv.tid} | {conv.created[:10]} {hh:02d}:{m:02d} | {conv.product}", ""]
    sec = 0
    turns = [["assistant", f"Thank you for calling Brightwave Home, this is {conv.agent}. "
              "How can I help you today?"], *conv.turns]
    for i, (role, text) in enumerate(turns):
        sec += 7 + 3 * i
        who = (conv.name if st["name_label"] else "Customer") if role == "user" else "Agent"
        said = " ".join(text.split())
        if role == "user" and st["inaudible"] and i == 1:
            said = said.replace(". ", ". [inaudible] ", 1)
        lines.append(f"[{hh:02d}:{(m + sec // 60) % 60:02d}:{sec % 60:02d}] {who}: {said}")
        if i == 1 and st["tool"]:
            stamp = f"{hh:02d}:{(m + sec // 60) % 60:02d}:{(sec + 2) % 60:02d}"
            lines.append(f"[{stamp}] -- caller placed on hold --")  # an event line, no speaker
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- plan
CODES = ["clean", "exact_dup", "near_dup", "contaminated", *(f"junk:{k}" for k in JUNK_KINDS)]


def plan_counts(n: int, n_eval: int) -> dict[str, int]:
    """How many records of each kind N conversations hold (every kind present from N ≈ 100)."""
    counts = {f"junk:{k}": max(2, round(n * 0.0125)) for k in JUNK_KINDS}
    counts["exact_dup"] = max(3, round(n * 0.03))
    counts["near_dup"] = max(3, round(n * 0.04))
    counts["contaminated"] = max(2, min(n_eval // 2, round(n * 0.01)))
    counts["clean"] = n - sum(counts.values())
    if counts["clean"] < n // 2 or n_eval < 4:
        raise SystemExit("--conversations must be at least 100 (and --eval-items at least 4)")
    return counts


def make_plan(rng: random.Random, counts: dict[str, int]) -> array:
    """One kind code per record position; the first positions are clean so copies have sources."""
    plan = array("B")
    for code, kind in enumerate(CODES):
        plan.extend([code] * counts[kind])
    warm = min(50, counts["clean"] // 4)
    rest = array("B", plan[warm:])
    rng.shuffle(rest)
    return plan[:warm] + rest


class Truth:
    """Ground truth: counts always; per-record lists and PII strings unless streaming (--scale)."""

    def __init__(self, keep: bool):
        self.keep = keep
        self.counts: dict[str, int] = {}
        self.files: dict[str, int] = {f: 0 for f in FILES.values()}
        self.lists: dict[str, list[Any]] = {"clean": [], "pii_free": [], "exact_duplicates": [],
                                            "near_duplicates": [], "junk": [], "contaminated": []}
        self.pii: dict[str, set[str]] = {t: set() for t in PII_TYPES}
        self.records: dict[str, dict[str, Any]] = {}

    def add(self, conv: Conv, rendered: str) -> None:
        kind = conv.kind if conv.kind != "junk" else f"junk:{conv.detail['junk']}"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.files[FILES[conv.fmt]] += 1
        if not self.keep:
            return
        pii = {t: sorted({v for v in vals if v in rendered}) for t, vals in conv.pii.items()}
        pii = {t: v for t, v in pii.items() if v}
        for t, vals in pii.items():
            self.pii[t].update(vals)
        self.records[conv.tid] = {"file": FILES[conv.fmt], "kind": conv.kind, **conv.detail,
                                  "pii": pii}
        if conv.kind == "clean":
            self.lists["clean"].append(conv.tid)
            if not pii:
                self.lists["pii_free"].append(conv.tid)
        elif conv.kind == "junk":
            self.lists["junk"].append({"id": conv.tid, "kind": conv.detail["junk"]})
        elif conv.kind == "exact_dup":
            self.lists["exact_duplicates"].append({"id": conv.tid, "of": conv.detail["of"]})
        elif conv.kind == "near_dup":
            self.lists["near_duplicates"].append({"id": conv.tid, "of": conv.detail["of"],
                                                  "edit": conv.detail["edit"]})
        else:
            self.lists["contaminated"].append({"id": conv.tid, "eval_id": conv.detail["eval_id"],
                                               "edit": conv.detail["edit"]})

    def to_dict(self, seed: int, n: int, eval_ids: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": seed, "conversations": n, "streamed": not self.keep,
                               "files": dict(self.files), "formats": {
                                   FILES["csv"]: "csv_tickets", FILES["widget"]: "json_chat",
                                   FILES["mbox"]: "email", FILES["txt"]: "transcript",
                                   FILES["messages"]: "openai_jsonl"},
                               "counts": dict(sorted(self.counts.items())),
                               "eval_file": "eval_items.jsonl", "eval_ids": eval_ids}
        if self.keep:
            out.update(self.lists)
            out["pii"] = {t: sorted(v) for t, v in self.pii.items()}
            out["records"] = self.records
        return out


def generate(out_dir: Path, n: int, seed: int, n_eval: int | None = None, scale: bool = False,
             on_record: Callable[[Conv], None] | None = None) -> dict[str, Any]:
    """Write the corpus, eval items and truth.json into out_dir; return the truth dict.

    `on_record` sees every generated record (before rendering to its format), for tests."""
    n_eval = n_eval if n_eval is not None else max(10, min(200, n // 20))
    counts = plan_counts(n, n_eval)
    rng = random.Random(seed)
    eval_rng = random.Random(seed * 1_000_003 + 17)
    out_dir.mkdir(parents=True, exist_ok=True)
    evals = [make_conversation(eval_rng, f"EV-{i + 1:05d}", "eval", pii=False, rich=True)
             for i in range(n_eval)]
    with open(out_dir / "eval_items.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for ev in evals:
            msgs = [{"role": "system", "content": SYSTEM}] + [{"role": r, "content": t}
                                                              for r, t in ev.turns]
            f.write(json.dumps({"id": ev.tid, "messages": msgs,
                                "metadata": {"queue": ev.queue, "product": ev.product}},
                               ensure_ascii=False) + "\n")
    contam_pool = deque(eval_rng.sample(range(n_eval), k=counts["contaminated"]))
    plan = make_plan(rng, counts)
    truth = Truth(keep=not scale)
    recent: deque[Conv] = deque(maxlen=256)
    formats, weights = list(FORMAT_WEIGHTS), list(FORMAT_WEIGHTS.values())
    near_i = contam_i = 0
    handles = {fmt: open(out_dir / name, "w", encoding="utf-8", newline="" if fmt == "csv" else "\n")
               for fmt, name in FILES.items()}
    try:
        writer = csv.writer(handles["csv"], lineterminator="\r\n")
        writer.writerow(["ticket_id", "created", "customer_name", "customer_email", "channel",
                         "product", "status", "transcript"])
        for pos, code in enumerate(plan):
            tid, kind = f"BW-{100001 + pos}", CODES[code]
            if kind == "clean":
                conv = make_conversation(rng, tid, rng.choices(formats, weights)[0])
            elif kind.startswith("junk:"):
                jk = kind[5:]
                conv = make_junk(rng, tid, rng.choice(JUNK_FORMATS[jk]), jk)
            elif kind in ("exact_dup", "near_dup"):
                cands = [rng.choice(recent) for _ in range(1 if kind == "exact_dup" else 8)]
                src = max(cands, key=lambda c: sum(len(t[1]) for t in c.turns))  # long: clear pair
                conv = copy.deepcopy(src)
                conv.tid, conv.kind, conv.detail = tid, kind, {"of": src.tid}
                if kind == "near_dup":
                    conv.detail["edit"] = NEAR_EDITS[near_i % len(NEAR_EDITS)]
                    near_i += 1
                    apply_edit(rng, conv, conv.detail["edit"])
            else:
                ev = evals[contam_pool.popleft()]
                conv = copy.deepcopy(ev)
                conv.tid, conv.kind, conv.fmt = tid, "contaminated", rng.choice(COPYABLE)
                edit = CONTAM_EDITS[contam_i % len(CONTAM_EDITS)]
                contam_i += 1
                conv.detail = {"eval_id": ev.tid, "edit": edit}
                if edit != "verbatim":
                    apply_edit(rng, conv, edit)
            if kind not in ("exact_dup", "near_dup"):
                style_for(rng, conv)
            if kind == "clean" and conv.fmt in COPYABLE:
                recent.append(conv)
            if on_record is not None:
                on_record(conv)
            rendered = _write(conv, handles, writer)
            truth.add(conv, rendered)
    finally:
        for h in handles.values():
            h.close()
    eval_ids = [ev.tid for ev in evals]
    result = truth.to_dict(seed, n, eval_ids)
    (out_dir / "truth.json").write_text(json.dumps(result, indent=1, ensure_ascii=False,
                                                   sort_keys=True) + "\n", encoding="utf-8")
    return result


def _write(conv: Conv, handles: dict[str, Any], writer: Any) -> str:
    """Render `conv` into its file; returns the rendered text (for the truth's PII check)."""
    if conv.fmt == "csv":
        row = render_csv(conv)
        writer.writerow(row)
        return "\n".join(row)
    if conv.fmt in ("widget", "messages"):
        obj = render_widget(conv) if conv.fmt == "widget" else render_messages(conv)
        text = json.dumps(obj, ensure_ascii=False)
    else:
        text = render_mbox(conv) if conv.fmt == "mbox" else render_txt(conv)
    handles[conv.fmt].write(text + "\n" if conv.fmt in ("widget", "messages") else text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--conversations", type=int, default=400, help="records across all files")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--eval-items", type=int, default=None,
                    help="held-out eval items (default: N/20, between 10 and 200)")
    ap.add_argument("--scale", action="store_true",
                    help="stream with constant memory; truth.json holds counts only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    truth = generate(args.out, args.conversations, args.seed, args.eval_items, args.scale)
    took = time.perf_counter() - t0
    size = sum((args.out / f).stat().st_size for f in FILES.values())
    print(f"wrote {args.conversations} conversations ({size / 1e6:.1f} MB) and "
          f"{len(truth['eval_ids'])} eval items to {args.out} in {took:.1f}s: "
          + ", ".join(f"{k} {v}" for k, v in truth["counts"].items()), file=sys.stderr)


if __name__ == "__main__":
    main()
