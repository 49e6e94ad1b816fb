"""Sentence templates and look-alike values for the PII benchmark corpus (scripts/pii_corpus.py).

Two kinds of text live here:

* carrier sentences per PII type: each holds "{v}" once (where the planted value goes) and may
  hold look-alike slots ("{product}", "{order}", …) that `fill` expands;
* clean support-desk sentences full of things that look like personal data and are not: order,
  ticket, tracking and invoice numbers, dates, times, prices, versions, SKUs, serial numbers and
  IMEIs, capitalised product and brand names, companies, cities, weekdays, sizes, street-like
  phrases without a street address, team and role words.

Slot values come from `Slots` (one seeded `random.Random` plus the corpus's Faker instances), so
a corpus is deterministic given its seed. No slot ever produces a person's name, an e-mail, a
phone number, a card, an IBAN or a street address.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

PHONE = (
    "You can reach me at {v}.", "My number is {v}", "call me back on {v} after 5pm please",
    "{v} is my mobile, text is fine.", "Phone: {v}", "please ring {v} about order {order}",
    "the courier should call {v} when he is outside", "my new cell is {v}, the old one is gone",
    "Best number to reach me is {v}.", "I tried calling from {v} but nobody picked up",
    "Could you update the phone on file to {v}?", "work line: {v} (mornings only)",
    "if I don't answer try my landline {v}", "Text me at {v} when the {product} ships.",
)
ADDRESS = (
    "Please ship it to {v}.", "My address is {v}", "I moved to {v} last month.", "Deliver to: {v}",
    "{v} is the new billing address.", "send the replacement to {v} please",
    "the {product} went to my old place at {v} instead", "Can you confirm the address {v}?",
    "I've moved, the new address is {v}.", "we're at {v}, the door code is 1234",
    "Billing address: {v}", "the invoice still shows {v}, which is wrong",
    "Can you pick up the return from {v} on {weekday}?",
)
ADDRESS_BLOCK = (
    "Ship to:\n{v}", "New address:\n{v}\nThanks!", "{v}\nThat's where I live now.",
)
EMAIL = (
    "My email is {v}", "please send the invoice to {v}.", "{v} is the login I use",
    "I never got the reset mail at {v}", "you can write to {v} instead", "E-mail: {v}",
    "change the account email to {v} please", "Did you send it to {v}? Nothing arrived.",
    "cc {v} on the ticket, it's my accountant",
)
CARD = (
    "the card I used was {v}", "please charge {v} instead", "Card number: {v}",
    "my card {v} got charged twice for order {order}", "refund it to {v} please", "{v} exp 09/27",
    "I'd like to replace the card on file with {v}.", "the payment on {v} was declined at checkout",
)
IBAN = (
    "My IBAN is {v}", "please refund to {v}.", "IBAN: {v}", "the direct debit comes from {v}",
    "{v} is the account for the refund", "new bank details: {v}, same bank as before",
    "Did the refund go to {v}?", "the SEPA mandate still lists {v}",
)
# "{v}" is a first and last name ("Dana Whitfield") or a reversed one ("Whitfield, Dana")
PERSON = (
    "the order is under {v}, not me.", "my husband {v} placed it last week",
    "can you check with {v} in your billing team?",
    "it was delivered to my neighbour {v} by mistake",
    "I'm writing on behalf of {v}, who is in hospital.", "the account belongs to my mother, {v}.",
    "please add {v} as an authorised user",
    "the parcel was signed for by {v}, who doesn't live here",
    "I already spoke to {v} yesterday and was promised a refund",
    "your technician {v} never showed up",
    "the gift was for {v}, so please don't send the invoice with it",
    "could you transfer the subscription to {v}?", "the receipt says the buyer was {v}",
    "our office manager {v} handles the invoices", "I share the account with my flatmate {v}.",
    "the warranty is registered to {v}", "my daughter {v} set up the {product} for me",
    "there's a second login for {v} that I want removed",
    "I ordered it together with {v} from work",
    "the refund should go back to {v} because they paid", "{v} is the account holder.",
    "{v} placed the order but I'm the one using it.",
    "{v} from your returns desk promised me a label.",
    "{v} and I both get the error on the {product}.",
    "{v} said the replacement would ship by {weekday}.",
    "{v} will pick up the parcel on {weekday}.", "The name on the order should read {v}.",
    "My landlord, {v}, has to approve the installation.", "Please cancel the order {v} made today.",
    "Yesterday {v} called you about the same problem.", "according to {v} the {product} is faulty",
    "both {v} and my son use this email", "I think {v} has the receipt",
)
TITLED = (  # "{title} {v}": a title and a last name, or a first and last name after "Dr."
    "I spoke to {title} {v} at the store", "{title} {v} from accounting asked me to write in",
    "please forward this to {title} {v}, who ordered the device",
    "the delivery note is addressed to {title} {v}", "{title} {v} is my landlord",
    "We bought it for {title} {v}'s practice.", "is {title} {v} still handling my case?",
)
TITLES = (
    "Mr.", "Ms.", "Mrs.", "Dr.", "Mr", "Ms", "Dr", "Prof.",
)

USER_CLEAN = (
    "My {product} stopped connecting after the update to {version}.",
    "I ordered {qty} on {date} and only got one box.", "Order {order} still says processing.",
    "Tracking {tracking} hasn't moved since {weekday}.",
    "I was charged {price} instead of {price}.",
    "The invoice {invoice} has the wrong VAT rate, it should be {pct}.",
    "It worked fine until {date}, around {time}.", "Serial number is {serial} if that helps.",
    "The {product} shows error code E{num3} every morning.", "I waited {days} days for a reply.",
    "The {num1} Main issues are the battery and the app.",
    "We bought {qty} for our office in {city}.", "The {screen} model flickers at {hz}.",
    "I'm on {version} and the app crashes on launch.",
    "Is the {product} compatible with the {product}?", "Can I return it? It's been {days} days.",
    "The box says model {sku} but the label says {sku}.", "IMEI is {imei}, it is locked.",
    "The discount code gave {pct} off but the total was still {price}.",
    "I'm travelling to {country} in {month}, will the charger work there?",
    "Delivery was promised for {weekday} between {time} and {time}.",
    "Ticket {ticket} was closed without an answer.",
    "I got two parcels, {ref_bare} and {ref_bare}.",
    "The {brand} rep at the {city} store told me to contact you.", "{street_like}",
    "Hi there, quick question about the {product}.", "The {product} app says firmware {version}.",
    "It's the {size} one, colour {colour}.", "We're a small team at {company}, {qty} seats.",
    "Please check {rma}.", "I paid {price} on {date} with Apple Pay.",
    "My {product} restarts every {num2} minutes.", "Reference {ref} from your letter of {date}.",
    "The shop in {city} didn't have the {product} in stock.", "{catch} — that's what your ad says!",
    "The battery drops {pct} overnight.", "Since {month} the {product} disconnects daily.",
    "Last {weekday} it finally synced, then it stopped again.", "Our IT contractor is {company}.",
    "Order number {order_bare}, placed {date}.", "Invoice no. {order_bare} still unpaid?",
    "I have the {product} and the {product}, both on {version}.", "{street_like}",
    "It keeps disconnecting.", "I tried resetting it twice already.", "Thanks, that worked!",
    "The app just spins forever.", "Nothing happens when I press the button.",
    "It was a gift, so I don't have the receipt.", "Can you send me a return label?",
    "The light blinks orange and then goes off.", "I'd like a refund, not a replacement.",
    "The box was damaged when it arrived.", "Do you ship to {country}?", "Why was I charged twice?",
    "The Wi-Fi setup fails at the last step.", "OK, I'll try that.",
    "Still the same problem after the reset.", "Where do I find the model number?",
    "I cancelled on {weekday} but still got charged.", "The replacement is also broken.",
)
AGENT_CLEAN = (
    "Thanks for reaching out! I've looked up order {order}.", "I'm sorry about the wait.",
    "Could you tell me the serial number on the back of the {product}?",
    "I've issued a refund of {price}; it takes {days} business days.",
    "Please update to {version} and restart the {product}.", "Your ticket is {ticket}.",
    "The replacement ships on {date} via {carrier}, tracking {tracking}.",
    "I've escalated this to our Tier {num1} team.", "That model ({sku}) is covered until {date}.",
    "Our {city} warehouse is out of stock until {month}.",
    "Is there anything else I can help with?",
    "I've applied a {pct} discount to invoice {invoice}.",
    "Please hold the reset button for {num2} seconds.",
    "The {product} only joins the 2.4 GHz band.",
    "We're open {weekday} to {weekday}, {time} to {time}.",
    "Your RMA number is {rma}; please write it on the box.",
    "That firmware ({version}) fixed the pairing bug for most customers.",
    "{company} is our authorised repair partner in {city}.", "Let me check that for you.",
    "I can see {qty} on the order, shipped {date}.", "Could you send a photo of the label?",
    "The {size} version is back in stock in {month}.", "Welcome to {brand} support!",
    "The charge of {price} was a pre-authorisation.", "{bs} is exactly what our new plan is for.",
    "Thanks for your patience.", "Could you try unplugging it for 30 seconds?",
    "I understand how frustrating that is.", "A replacement is on its way.",
    "Have you tried the latest version of the app?", "I've passed this on to the warehouse.",
    "Could you confirm which colour you ordered?",
    "Our returns window is {days} days from delivery.", "I'll keep this case open until {weekday}.",
    "Please allow 5 to 10 business days for the refund to appear.", "Happy to help!",
)
AGENT = {  # the same types in the agent's voice (an assistant turn repeating or confirming a value)
    "phone": ("Is {v} still the number we have for you?", "I've added {v} as the contact number.",
              "I tried to call you on {v} but got voicemail.",
              "We'll text {v} when the courier is close."),
    "address": ("Can you confirm the address {v}?", "I've updated the shipping address to {v}.",
                "The replacement will go to {v}.", "Our records show {v} as the billing address."),
    "email": ("I've resent the link to {v}.", "Can you confirm that {v} is the right address?",
              "The receipt went to {v} on {date}.", "I've changed the login email to {v}."),
    "iban": ("Can you confirm the refund went to {v}?", "I've noted {v} for the refund.",
             "The mandate on file is for {v}."),
    "person": ("I've added {v} as an authorised user.", "I can see the order was placed by {v}.",
               "Is {v} the account holder?", "I've passed this on to {v} in our warehouse team.",
               "{v} from our billing team will call you back.",
               "The parcel was signed for by {v}."),
}
SIGNOFF = (
    "Thanks, {role}", "Kind regards,\n{role}", "— {role}", "Best,\n{role}",
)
GREETING = (
    "Hi there,", "Hello Support,", "Good morning team,", "Dear Customer Service,", "Hey,", "Hello,",
    "Hi,", "Good afternoon,",
)
ROLES = (
    "Customer Care", "Support Team", "Billing Team", "The Returns Desk", "Tier 2 Support",
    "Your Account Manager", "Technical Support", "The Service Desk", "Order Management",
)
STREET_LIKE = (  # numbers before capitalised street-suffix words, none of them an address
    "I waited {days} days for the {product}.", "We have {num1} Way switches in the hallway.",
    "All {num1} Bridge units lost their pairing.",
    "It got a {num1} Star review from me before this.",
    "The {num1} Point inspection found nothing.", "Our {num1} Lake houses use the same router.",
    "I replaced {num1} Light bulbs already.",
    "Park {num1} cars in front, it still didn't detect them.",
    "The Center channel is dead on {num1} speakers.", "I bought {num1} Mesh Points for the Garden.",
    "Gate {num2} at Terminal {num1} is where I lost it.",
    "The {num1} Court dates I had were cancelled.",
    "Sorry, I took the Express Way option and it came late.", "{num1} Circle lenses are scratched.",
    "The manual on Page {num2} says Step {num1} is optional.",
    "Route {num2} edition of the map is missing.",
    "I drove {num2} miles to the store on Main Street to return it.",
    "Level {num1} support, please.",
)
PRODUCTS = (
    "Nest Learning Thermostat", "Galaxy S23 Ultra", "ThinkPad X1 Carbon", "MacBook Air",
    "Ring Video Doorbell Pro", "Echo Show 8", "Pixel 8 Pro", "Surface Laptop Studio", "Arlo Pro 4",
    "Philips Hue White Ambiance", "Sonos Era 100", "Roborock S8", "Dyson V15 Detect",
    "Kindle Paperwhite", "Fire TV Stick 4K", "Apple Watch Series 9", "Garmin Forerunner 265",
    "HomePod mini", "Eero Pro 6E", "Netgear Orbi", "TP-Link Deco X55", "Logitech MX Master 3S",
    "Dell UltraSharp U2723QE", "LG OLED C3", "Bose QuietComfort Ultra", "Kasa Smart Light Switch",
    "Wyze Cam v3", "Ecobee Smart Thermostat Premium", "August Wi-Fi Smart Lock",
    "Yale Assure Lock 2", "Canon PIXMA TS6420", "HP LaserJet Pro M404", "Brother HL-L2350DW",
    "Lenovo Legion 5", "ASUS ROG Zephyrus G14", "Acer Swift Go", "OnePlus 12", "Redmi Note 13",
    "Motorola Edge 40", "Samsung Frame TV", "Nanoleaf Shapes", "Aqara Hub M2",
    "Tado Smart Radiator Thermostat", "Eufy RoboVac G30", "Chromecast with Google TV",
    "Meross Smart Plug Mini",
)
BRANDS = (
    "Samsung", "Lenovo", "Philips", "Sonos", "Logitech", "Garmin", "Bosch", "Siemens", "Miele",
    "Xiaomi", "Huawei", "Tado", "Netatmo", "Eufy", "Anker", "Belkin", "Aqara",
)
CARRIERS = (
    "UPS", "DHL Express", "FedEx", "USPS Priority Mail", "Royal Mail", "DPD", "Hermes",
    "La Poste Colissimo", "Correios SEDEX", "Blue Dart",
)
COLOURS = (
    "Midnight Black", "Arctic White", "Sage Green", "Sierra Blue", "Rose Gold", "Graphite",
)


class Slots:
    """Look-alike slot values; `fill(text)` expands every "{slot}" in `text`."""

    def __init__(self, rng: random.Random, fakers: dict[str, Any]) -> None:
        self.rng = rng
        self.fakers = fakers

    def fill(self, text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(getattr(self, m.group(1))()), text)

    def clean_turn(self, role: str) -> str:
        """1-2 clean sentences for a user or an agent turn."""
        pool = USER_CLEAN if role == "user" else AGENT_CLEAN
        return " ".join(self.fill(self.rng.choice(pool)) for _ in range(self.rng.randint(1, 2)))

    def _digits(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        rest = "".join(str(self.rng.randrange(10)) for _ in range(n - 1))
        return str(self.rng.randint(1, 9)) + rest

    def _faker(self) -> Any:
        return self.fakers[self.rng.choice(("en_US", "en_GB", "de_DE", "fr_FR"))]

    # ------------------------------------------------------ identifiers (with their labels)
    def order(self) -> str:
        n = self._digits(6, 12)
        return self.rng.choice((f"#{n}", f"number {n}", f"No. {n}", n, f"#{n[:3]}-{n[3:]}",
                                f"ORD-{n}"))

    def order_bare(self) -> str:
        return self._digits(10, 12)

    def ref_bare(self) -> str:
        """An order reference written without a label, in the shapes shops print them."""
        r = self.rng
        kind = r.randrange(10)
        if kind < 2:  # marketplace style 113-4829301-7564210
            return f"{r.randint(100, 999)}-{self._digits(7, 7)}-{self._digits(7, 7)}"
        if kind < 4:  # auction style 12-34567-89012
            return f"{r.randint(10, 99)}-{self._digits(5, 5)}-{self._digits(5, 5)}"
        if kind < 6:  # shop-system style #10452
            return f"#{self._digits(4, 6)}"
        return self._digits(6, 8) if kind < 9 else self._digits(10, 12)

    def ticket(self) -> str:
        return self.rng.choice((f"#{self._digits(5, 8)}", f"CS-{self._digits(6, 8)}",
                                f"INC{self._digits(7, 7)}"))

    def invoice(self) -> str:
        return self.rng.choice((f"INV-{self._digits(6, 10)}", f"no. {self._digits(8, 11)}",
                                f"{self.rng.randint(2023, 2025)}-{self._digits(5, 6)}"))

    def rma(self) -> str:
        return f"RMA{self._digits(6, 9)}"

    def ref(self) -> str:
        return f"{self.rng.choice('ABKX')}-{self._digits(6, 9)}"

    def tracking(self) -> str:
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:  # UPS-style
            return "1Z" + "".join(r.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))
        if kind == 1:  # USPS 22 digits in groups of 4
            d = "9400" + self._digits(18, 18)
            return " ".join(d[i:i + 4] for i in range(0, 22, 4))
        if kind == 2:  # FedEx 12 digits
            return self._digits(12, 12)
        return f"JJD{self._digits(18, 18)}"  # DHL parcel

    def sku(self) -> str:
        r = self.rng
        up = "ABCDEFGHJKLMNPRSTUVWXYZ"
        return r.choice((
            f"{r.choice(up)}{r.choice(up)}-{r.choice(('HUB', 'CAM', 'PLG'))}-{r.randint(100, 999)}",
            f"SKU {r.randint(10000, 99999)}-{r.randint(1, 99):02d}", f"A{r.randint(1000, 3000)}",
            f"SM-S{r.randint(900, 928)}B", f"TL-WR{r.randint(800, 950)}N",
            f"part no. {r.randint(1, 9)}{r.choice(up)}{r.randint(1000, 9999)}"))

    def serial(self) -> str:
        r = self.rng
        s = "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")
                    for _ in range(r.randint(10, 14)))
        return r.choice((f"SN: {s}", s, f"S/N {self._digits(10, 12)}", f"serial {s}"))

    def imei(self) -> str:
        """A Luhn-valid 15-digit IMEI, compact or in the 2-6-6-1 grouping."""
        body = self.rng.choice(("35", "86", "01")) + self._digits(12, 12)
        total = 0
        for i, ch in enumerate(reversed(body)):
            d = int(ch) * (2 if i % 2 == 0 else 1)
            total += d - 9 if d > 9 else d
        full = body + str((10 - total % 10) % 10)
        return self.rng.choice((full, f"{full[:2]} {full[2:8]} {full[8:14]} {full[14]}"))

    def version(self) -> str:
        r = self.rng
        a, b, c = r.randint(1, 17), r.randint(0, 12), r.randint(0, 30)
        return r.choice((
            f"v{a}.{b}.{c}", f"version {a}.{b}", f"{a}.{b}.{c}.{r.randint(100, 9999)}",
            f"build {r.randint(19000, 26100)}.{r.randint(1, 4000)}", f"iOS {a}.{b}.{c}",
            f"Android {r.randint(10, 15)}", f"{a}.{b} (build {self._digits(7, 7)})"))

    # ------------------------------------------------------------- dates, money, quantities
    def date(self) -> str:
        d = dt.date(2023, 1, 1) + dt.timedelta(days=self.rng.randrange(900))
        fmt = self.rng.choice(("%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%B %d, %Y",
                               "%d %B %Y", "%b %d", "%A, %B %d", "%d-%m-%y", "%Y/%m/%d",
                               "%m/%d", "%d.%m.", "%b %d %Y", "%a %d %b"))
        return d.strftime(fmt)

    def time(self) -> str:
        h, m = self.rng.randrange(24), self.rng.choice((0, 15, 30, 45, 5, 52))
        ampm, h12 = ("pm" if h >= 12 else "am"), h % 12 or 12
        return self.rng.choice((f"{h:02d}:{m:02d}", f"{h12}:{m:02d} {ampm}", f"{h12}{ampm}",
                                f"{h}h{m:02d}", f"{h:02d}:{m:02d}:{self.rng.randrange(60):02d}"))

    def price(self) -> str:
        a = self.rng.choice((self.rng.randint(5, 99), self.rng.randint(100, 2999)))
        c = self.rng.choice((99, 0, 49, 95, 90))
        return self.rng.choice((
            f"${a:,}.{c:02d}", f"€{a},{c:02d}", f"£{a}.{c:02d}", f"{a:,}".replace(",", ".") +
            f",{c:02d} €", f"USD {a}", f"R$ {a},{c:02d}", f"₹ {a * 80:,}", f"{a}.{c:02d} EUR",
            f"${a}"))

    def qty(self) -> str:
        n = self.rng.randint(2, 40)
        return self.rng.choice((f"{n} units", f"{n} boxes", f"{n} of them", f"x{n}", f"{n} pcs"))

    def pct(self) -> str:
        r = self.rng
        return r.choice((f"{r.randint(1, 60)}%", f"{r.randint(1, 60)} percent",
                         f"{r.randint(1, 9)}.5 %"))

    def size(self) -> str:
        r = self.rng
        return r.choice((f"{r.choice((24, 27, 32, 55, 65))} inch", f'{r.choice((43, 50, 65))}"',
                         f"{r.choice((1, 2, 4))} TB", f"{r.choice((8, 16, 32))}GB RAM",
                         f"{r.choice((3, 5, 10))} ft", "XL"))

    def screen(self) -> str:
        r = self.rng
        return r.choice((f"{r.choice((24, 27, 32, 34))} inch", f'{r.choice((43, 50, 55, 65))}"',
                         f"{r.choice((13, 14, 15, 16))}-inch"))

    def hz(self) -> str:
        return self.rng.choice(("120 Hz", "60Hz", "75 Hz", "144 Hz"))

    def days(self) -> int:
        return self.rng.randint(2, 21)

    def num1(self) -> int:
        return self.rng.randint(2, 6)

    def num2(self) -> int:
        return self.rng.randint(7, 90)

    def num3(self) -> int:
        return self.rng.randint(100, 999)

    def weekday(self) -> str:
        return dt.date(2024, 1, self.rng.randint(1, 7)).strftime("%A")

    def month(self) -> str:
        return dt.date(2024, self.rng.randint(1, 12), 1).strftime(self.rng.choice(("%B", "%b")))

    # ------------------------------------------------------------ names that are not people
    def product(self) -> str:
        return self.rng.choice(PRODUCTS)

    def brand(self) -> str:
        return self.rng.choice(BRANDS)

    def carrier(self) -> str:
        return self.rng.choice(CARRIERS)

    def colour(self) -> str:
        return self.rng.choice(COLOURS)

    def role(self) -> str:
        return self.rng.choice(ROLES)

    def company(self) -> str:
        return self._faker().company()

    def city(self) -> str:
        return self._faker().city()

    def country(self) -> str:
        return self._faker().country()

    def catch(self) -> str:
        return self.fakers["en_US"].catch_phrase()

    def bs(self) -> str:
        return self.fakers["en_US"].bs().capitalize()

    def street_like(self) -> str:
        return self.fill(self.rng.choice(STREET_LIKE))
