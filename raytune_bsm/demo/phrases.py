"""The demo data's words: vocabulary pools and message templates for each story part (see `generator.py`).

Templates are formatted with the per-record context of `facts.Context`; `{name}` slots name context keys or
synonym groups (`SYN`), re-drawn at every use.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Vocabulary pools
# --------------------------------------------------------------------------------------------

BRANDS: dict[str, tuple[str, ...]] = {
    "tech": (
        "Anker",
        "Logitech",
        "Sony",
        "Samsung",
        "JBL",
        "Razer",
        "Lenovo",
        "TP-Link",
        "Sandisk",
        "Canon",
        "Garmin",
        "Kasa",
        "Bose",
        "Belkin",
        "no-name",
        "refurbished",
    ),
    "kitchen": (
        "KitchenAid",
        "Ninja",
        "Cuisinart",
        "Breville",
        "Lodge",
        "Instant Pot",
        "Vitamix",
        "OXO",
        "Hamilton Beach",
        "handmade",
        "no-name",
    ),
    "outdoor": ("Osprey", "Coleman", "Yeti", "Hydro Flask", "Merrell", "REI", "Patagonia", "The North Face", "no-name"),
    "apparel": ("Nike", "Levi's", "Brooks", "Crocs", "Adidas", "Uniqlo", "Zara", "vintage", "handmade", "New Balance"),
    "home": (
        "Ikea-style",
        "Philips",
        "Dyson",
        "Oral-B",
        "Moleskine",
        "West Elm",
        "handmade",
        "vintage",
        "no-name",
        "Bosch",
    ),
    "toys": ("Ravensburger", "Hasbro", "Mattel", "LEGO", "Melissa & Doug", "no-name"),
}
# (product noun, variant kind, brand category)
PRODUCTS = (
    ("wireless earbuds", "color", "tech"),
    ("USB-C charger", "model", "tech"),
    ("running shoes", "shoe", "apparel"),
    ("denim jacket", "size", "apparel"),
    ("cast iron skillet", "inch", "kitchen"),
    ("phone case", "model", "tech"),
    ("desk lamp", "color", "home"),
    ("blender", "color", "kitchen"),
    ("hiking backpack", "liter", "outdoor"),
    ("smartwatch", "color", "tech"),
    ("mechanical keyboard", "switch", "tech"),
    ("gaming mouse", "color", "tech"),
    ("coffee grinder", "color", "kitchen"),
    ("yoga mat", "color", "outdoor"),
    ("LED strip lights", "length", "home"),
    ("bookshelf kit", "color", "home"),
    ("office chair", "color", "home"),
    ("bike helmet", "size", "outdoor"),
    ("camera lens", "model", "tech"),
    ("ceramic vase", "color", "home"),
    ("wall clock", "color", "home"),
    ("board game", "edition", "toys"),
    ("building block set", "edition", "toys"),
    ("air fryer", "liter", "kitchen"),
    ("vacuum filter pack", "model", "home"),
    ("mini drone", "color", "tech"),
    ("guitar strings", "gauge", "home"),
    ("tablet stand", "color", "tech"),
    ("hair dryer", "color", "home"),
    ("throw blanket", "color", "home"),
    ("summer dress", "size", "apparel"),
    ("sneakers", "shoe", "apparel"),
    ("sunglasses", "color", "apparel"),
    ("watch band", "length", "tech"),
    ("ink cartridge pack", "model", "tech"),
    ("baby monitor", "model", "tech"),
    ("car phone mount", "model", "tech"),
    ("2-person tent", "color", "outdoor"),
    ("hiking boots", "shoe", "outdoor"),
    ("portable SSD", "capacity", "tech"),
    ("27-inch monitor", "model", "tech"),
    ("wifi router", "model", "tech"),
    ("vinyl record", "edition", "home"),
    ("perfume", "ml", "home"),
    ("skincare set", "edition", "home"),
    ("electric toothbrush", "color", "home"),
    ("kitchen scale", "color", "kitchen"),
    ("jigsaw puzzle", "edition", "toys"),
    ("sleeping bag", "size", "outdoor"),
    ("memory card", "capacity", "tech"),
    ("espresso machine", "color", "kitchen"),
    ("rain jacket", "size", "outdoor"),
    ("leather wallet", "color", "apparel"),
    ("smart plug 4-pack", "model", "tech"),
    ("notebook set", "color", "home"),
    ("water bottle", "color", "outdoor"),
    ("bluetooth speaker", "color", "tech"),
    ("standing desk frame", "color", "home"),
    ("dog harness", "size", "outdoor"),
    ("kids' scooter", "color", "toys"),
    ("dutch oven", "inch", "kitchen"),
    ("wool sweater", "size", "apparel"),
)
VARIANTS = {
    "color": (
        "black",
        "white",
        "navy",
        "red",
        "forest green",
        "grey",
        "rose gold",
        "blue",
        "beige",
        "olive",
        "charcoal",
        "sky blue",
        "burgundy",
        "cream",
    ),
    "size": ("XS", "S", "M", "L", "XL", "XXL", "size 6", "size 10", "size 14"),
    "shoe": ("US 7", "US 8", "US 8.5", "US 9", "US 9.5", "US 10", "US 11", "EU 42", "EU 44"),
    "inch": ("8-inch", "10-inch", "12-inch", "15-inch"),
    "model": ("v1", "v2", "Pro", "Lite", "Max", "2023 model", "2024 model", "type A", "type C"),
    "liter": ("20L", "28L", "35L", "45L", "4 qt", "6 qt"),
    "switch": ("red switches", "brown switches", "blue switches", "silent switches"),
    "length": ("2 m", "5 m", "10 m", "small/medium", "medium/large"),
    "edition": (
        "standard edition",
        "deluxe edition",
        "anniversary edition",
        "travel edition",
        "1000 pieces",
        "500 pieces",
    ),
    "gauge": ("light gauge", "medium gauge", "extra light", "heavy gauge"),
    "capacity": ("64GB", "128GB", "256GB", "512GB", "1TB", "2TB"),
    "ml": ("30 ml", "50 ml", "100 ml"),
}
PARTS: dict[str, tuple[str, ...]] = {
    "tech": (
        "charging cable",
        "power adapter",
        "remote control",
        "left earbud",
        "mounting screws",
        "batteries",
        "carrying case",
        "instruction manual",
        "stand",
        "ear tips",
    ),
    "kitchen": (
        "lid",
        "glass carafe",
        "filter",
        "blade assembly",
        "power cord",
        "measuring scoop",
        "second basket",
        "instruction manual",
    ),
    "outdoor": ("tent poles", "stuff sack", "shoulder strap", "hip belt", "tent pegs", "rain fly", "cap", "buckle"),
    "apparel": ("belt", "spare buttons", "matching scarf", "second shoe insert", "gift box", "drawstring bag"),
    "home": (
        "mounting screws",
        "wall anchors",
        "allen key",
        "hex bolts",
        "shelf pins",
        "second cushion",
        "bulbs",
        "instruction manual",
        "feet",
        "batteries",
    ),
    "toys": ("dice", "instruction booklet", "bag of pieces", "wheel caps", "spinner", "batteries", "sticker sheet"),
}
DAMAGE = (
    "screen was cracked",
    "corner was dented in",
    "glass was shattered",
    "handle had snapped off",
    "seam was torn open",
    "bottle was leaking everywhere",
    "casing was split down the side",
    "legs were bent",
    "surface was scratched all over",
    "thing won't even power on",
    "lid was cracked",
    "frame was warped",
    "buttons were pushed in and stuck",
)
# (what the buyer says is wrong, what the listing actually disclosed)
NAD = (
    ("it's clearly used, there are scratches and scuffs on it", "open box, tested, minor cosmetic scratches"),
    ("the color is nothing like the photos", "colour may vary slightly from the photos"),
    ("it's about half the size I expected", "dimensions 20 x 15 x 8 cm, see photo 3"),
    ("it's the older model, not the new one", "previous generation model"),
    ("it's not the original brand, it's a compatible one", "compatible accessory, not OEM"),
    ("the box was opened and taped back up", "open box / repackaged"),
    ("it doesn't have the bluetooth feature", "wired version only, no bluetooth"),
    ("it's a refurbished unit, not new", "certified refurbished"),
)
CARRIERS = (
    "UPS",
    "USPS",
    "FedEx",
    "DHL",
    "Royal Mail",
    "Canada Post",
    "OnTrac",
    "LaserShip",
    "Evri",
    "Amazon Logistics",
)
FIRST = (
    "James",
    "Maria",
    "Wei",
    "Priya",
    "Tom",
    "Aisha",
    "Lucas",
    "Sofia",
    "Daniel",
    "Emma",
    "Kenji",
    "Fatima",
    "Olga",
    "Carlos",
    "Hannah",
    "Noah",
    "Chloe",
    "Omar",
    "Grace",
    "Ivan",
    "Zoe",
    "Ben",
    "Leila",
    "Sam",
    "Nina",
    "Raj",
    "Julia",
    "Mateo",
    "Ava",
    "Pat",
)
LAST = (
    "Smith",
    "Jones",
    "Garcia",
    "Nguyen",
    "Patel",
    "Brown",
    "Kowalski",
    "Müller",
    "Okafor",
    "Rossi",
    "Kim",
    "Silva",
    "Cohen",
    "Murphy",
    "Ivanova",
    "Hughes",
    "Tanaka",
    "Lopez",
    "Wright",
    "Dubois",
)
CITIES = (
    ("Austin", "TX"),
    ("Denver", "CO"),
    ("Columbus", "OH"),
    ("Portland", "OR"),
    ("Tampa", "FL"),
    ("Raleigh", "NC"),
    ("Madison", "WI"),
    ("Tucson", "AZ"),
    ("Albany", "NY"),
    ("Boise", "ID"),
    ("Omaha", "NE"),
    ("Richmond", "VA"),
    ("Spokane", "WA"),
    ("Reno", "NV"),
    ("Savannah", "GA"),
    ("Dayton", "OH"),
    ("Fresno", "CA"),
    ("Lansing", "MI"),
    ("Tulsa", "OK"),
    ("Burlington", "VT"),
)
STREETS = (
    "Maple Ave",
    "Oak St",
    "Cedar Ln",
    "Pine Rd",
    "Elm Ct",
    "Lakeview Dr",
    "Hillcrest Blvd",
    "Main St",
    "Park Pl",
    "River Rd",
    "Sunset Ave",
    "Birch Way",
    "2nd Ave",
    "Washington St",
)
SHOPS = (
    "Brightside Goods",
    "TechNest",
    "Urban Thread Co",
    "HomeHaven",
    "GearLoft",
    "The Little Print Shop",
    "PixelPeak",
    "Cozy Corner Crafts",
    "DealDepot",
    "NorthPeak Outdoor",
    "Kitchen Kingdom",
    "SoleMate Shoes",
    "Bits & Bobs",
    "Vintage Vault",
    "ZenDen Store",
)
PLATFORMS = (
    "eBay",
    "Etsy",
    "PayPal",
    "Amazon",
    "the marketplace",
    "my bank",
    "my credit card company",
    "Mercari",
    "the payment provider",
)
FOUND = (
    "it was behind the planter by the back door",
    "my neighbour had taken it in for me",
    "it was in the parcel locker downstairs the whole time",
    "the front desk had it in their back room",
    "my partner had picked it up and left it in the car",
    "it had been left on the side porch where I never look",
    "it was in the mailbox after all, under a pile of flyers",
    "my roommate brought it in and forgot to tell me",
    "the building manager found it in the mail room",
    "it was delivered to the garage door, not the front",
    "my kid had put it in the hall closet",
    "it turned up at the leasing office",
)
DOORS = ("red", "blue", "white", "black", "green", "grey", "yellow", "brown")
RELATIVES = (
    "wife",
    "husband",
    "mom",
    "dad",
    "sister",
    "brother",
    "son",
    "daughter",
    "partner",
    "roommate",
    "neighbour",
)
OCCASIONS = (
    "a birthday this weekend",
    "my trip next week",
    "work on Monday",
    "my daughter's school project",
    "a wedding gift",
    "the holidays",
    "a job interview",
)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Synonyms resolved freshly at every use.
SYN: dict[str, tuple[str, ...]] = {
    "hi": (
        "",
        "",
        "",
        "Hi, ",
        "Hello, ",
        "Hi there, ",
        "Hey, ",
        "Good morning, ",
        "Hello! ",
        "Hi again, ",
        "Dear seller, ",
    ),
    "shi": (
        "",
        "",
        "Hi, ",
        "Hello, ",
        "Hi there! ",
        "Thanks for your message. ",
        "Thank you for reaching out. ",
        "Good afternoon, ",
        "Hello and thanks for contacting us. ",
    ),
    "pkg": ("package", "parcel", "order", "box", "shipment", "delivery"),
    "sorry": ("Sorry", "Apologies", "So sorry", "We're sorry", "I'm sorry", "Very sorry"),
    "thx": ("Thanks", "Thank you", "Thanks a lot", "Cheers", "Many thanks", "Appreciate it"),
    "check": ("checked", "looked", "had a look", "double-checked", "searched"),
    "soon": ("as soon as possible", "asap", "soon", "quickly", "today if you can"),
    "upset": ("frustrated", "disappointed", "annoyed", "fed up", "upset", "not happy"),
    "esc": ("open a case", "escalate this", "file a dispute", "file a claim", "raise a dispute", "take this further"),
    "photo": ("photo", "picture", "pic", "screenshot", "image"),
    "photos": ("photos", "pictures", "pics", "screenshots", "images"),
    "Photos": ("Photos", "Pictures", "Pics", "Screenshots", "Images"),
}


# --------------------------------------------------------------------------------------------
# Templates. Each is formatted with format_map(Context); a message must never contain "\n".
# --------------------------------------------------------------------------------------------

_T = tuple[str, ...]

OPEN: dict[str, _T] = {
    "not_received": (
        "{hi}I ordered the {item} on {order_date} and it still hasn't arrived. Where is my {pkg}?",
        "{hi}Never received my {item}. It's been {days} days since I paid {amount}.",
        "{hi}{carrier} says my {pkg} was delivered on {deliv_date} but there was nothing at my door when I got home.",
        "{hi}I'm still waiting on order {order_ref}. Nothing has shown up at my address in {city}.",
        "Where is my stuff?? Paid {amount} for the {item} {days} days ago and nothing.",
        "{hi}my {item} was supposed to be here by {eta_date}. No {pkg}, no email, nothing. Please advise.",
        "{hi}could you look into order {order_ref}? The {item} hasn't come yet and I need it for {occasion}.",
        "{hi}I didn't get my {pkg}. I {check} with the neighbours and the mail room, nobody has it.",
        "{hi}the tracking on my {item} says delivered but I never got it. I was home all day.",
        "{hi}I have not received the {item} ({amount}). Can you tell me what happened to it?",
        "Order {order_ref} never showed up. I'd like to know what's going on.",
        "{hi}I bought a {item} from you on {order_date}. It's now {days} days later and I have nothing.",
    ),
    "late": (
        "{hi}my {item} was promised for {eta_date} and it's now {late_days} days late.",
        "{hi}the estimated delivery date came and went. Order {order_ref} is still not here.",
        "{hi}tracking {tracking} hasn't moved since {ship_date}. Is it lost?",
        "{hi}I paid extra for express shipping and the {item} is already {late_days} days overdue.",
        "Any idea when the {item} will arrive? It said {eta_date} and we're well past that.",
        "{hi}I ordered on {order_date}, the listing said 3-5 days. Still waiting on the {pkg}.",
        "{hi}the {item} still hasn't arrived and I needed it for {occasion}. What's the holdup?",
        "{hi}it's been {days} days. The {carrier} tracking just says in transit. This is way too slow.",
    ),
    "damaged": (
        "{hi}the {item} arrived today but the {damage}. The box was crushed on one side.",
        "{hi}received my order but it's damaged, the {damage}. I have {photos}.",
        "{hi}opened the {pkg} and the {item} was broken. The {damage}. Not happy for {amount}.",
        "The {item} came in pieces. The packaging was just a thin bag with no padding.",
        "{hi}the {item} showed up damaged, the {damage}. I'd like a refund or a replacement.",
        "{hi}my {item} was delivered yesterday and the {damage}. {Photos} attached.",
        "{hi}I'm really {upset}. The {item} I ordered on {order_date} arrived and the {damage}.",
        "{hi}unboxed the {item} this morning. The {damage}, I can't use it like this.",
    ),
    "wrong_item": (
        "{hi}I ordered the {item} in {var_a} but received {var_b}.",
        "{hi}this is not what I ordered. I got the {item} in {var_b}, I wanted {var_a}.",
        "Wrong item sent. Order {order_ref} should be {var_a}, the label on the box says {var_b}.",
        "{hi}you sent me the wrong one. I picked {var_a}, this is {var_b}.",
        "{hi}the {item} arrived but it's {var_b} instead of {var_a}. Can you fix this?",
        "{hi}just opened my {pkg} and it's the wrong version of the {item} ({var_b}, not {var_a}).",
        "{hi}I received somebody else's item, or at least not the {var_a} {item} I paid {amount} for.",
    ),
    "missing_parts": (
        "{hi}the {item} arrived but the {part} {is_are} missing.",
        "{hi}box came without the {part}. I can't use the {item} without {it_them}.",
        "{hi}only part of my order was in the box. The {part} {is_are} not there.",
        "The set is incomplete, no {part} anywhere in the packaging.",
        "{hi}I {check} the whole box twice and there's no {part} for the {item}.",
        "{hi}the {item} is missing the {part}. The manual lists {it_them} but {it_they} {is_are}n't included.",
        "{hi}my {item} came today, everything except the {part}. Please send {it_them} {soon}.",
    ),
    "not_as_described": (
        "{hi}the {item} is not as described. The listing looked new but {nad_issue}.",
        "{hi}this {item} looks nothing like the listing, {nad_issue}.",
        "{hi}I'm {upset}. The {item} I received is not what the listing showed: {nad_issue}.",
        "{hi}item not as described. {nad_issue_cap}. I paid {amount} for this.",
        "{hi}the {item} arrived and honestly {nad_issue}. That's not what I paid for.",
        "{hi}received the {item} today and {nad_issue}. I'd like this sorted out.",
    ),
}

SHORT_OPEN: dict[str, _T] = {
    "not_received": (
        "Where is my order? Nothing has arrived yet.",
        "My package never arrived, please check.",
        "Still haven't received my {item}, what's going on?",
        "Never got my order. Please help.",
    ),
    "late": (
        "My order is late. When will it arrive?",
        "Still waiting on my {pkg}, it's overdue.",
        "Tracking hasn't updated in a week, where is it?",
    ),
    "damaged": (
        "The {item} arrived broken. What now?",
        "Item arrived damaged, {photos} attached.",
        "My {item} came damaged, the {damage}.",
    ),
    "wrong_item": ("You sent the wrong item. I ordered {var_a}.", "Wrong {item} received, need the right one."),
    "missing_parts": ("The {part} {is_are} missing from my order.", "Box is missing the {part}, please send."),
    "not_as_described": ("Item is not as described at all.", "This {item} is not what the listing showed."),
}

# Single-message records where the buyer already resolves it.
# Optional extra sentences appended to the buyer's opening message (label-neutral).
OPEN_DETAIL: _T = (
    "Order number is {order_ref}.",
    "I paid {amount} on {order_date}.",
    "It shipped with {carrier}, tracking {tracking}.",
    "The shipping address is {house_no} {street}, {city}, {state}.",
    "I've attached {photos}.",
    "This is the first time I've had a problem with an order from you.",
    "I need this sorted {soon}.",
    "It was meant to be for {occasion}.",
    "Please let me know what you can do.",
    "I'd prefer a replacement if possible, otherwise a refund.",
    "I've bought from {shop} before and it was always fine.",
    "The order page still says it's on its way.",
    "I've already waited longer than the estimate of {eta_date}.",
)

SOLO: dict[str, _T] = {
    "confirms_delivery": (
        "Hi, I messaged about my missing {pkg} earlier but {found}. All good, please disregard.",
        "The {item} finally arrived today, no need to do anything. {thx}!",
        "Update on order {order_ref}: it showed up, sorry for the false alarm.",
        "Ignore my last message, {found}.",
    ),
    "confirms_item": (
        "Never mind my earlier message, found the {part} taped inside the lid.",
        "Sorry, false alarm about the {item}, it works fine now that I set it up properly.",
        "Please disregard my complaint about order {order_ref}, I checked again and it's what I ordered.",
    ),
    "withdraws": (
        "Please ignore my claim about order {order_ref}, I've withdrawn it.",
        "I opened a case about the {item} by mistake, I've closed it now. Sorry!",
        "Closing my request about the {item}, no action needed.",
    ),
}

SELLER_ASK: _T = (
    "{shi}{sorry} to hear that. Could you send your order number and a {photo} of the {pkg}?",
    "{shi}Can you confirm the shipping address on the order for me?",
    "{shi}Could you send a couple of {photos} of the {item} and the box it came in?",
    "{shi}We're looking into it. Could you check with neighbours and your mail room in the meantime?",
    "{shi}{sorry} about this. What's the order number so I can pull it up?",
    "{shi}Thanks for letting us know. Can you describe exactly what you received?",
    "{shi}I'll look into this right away. Do you still have the packaging?",
    "{shi}Could you send a {photo} of the shipping label on the box, please?",
)

BUYER_INFO: _T = (
    "Order number is {order_ref}. Address is {house_no} {street}, {city}, {state}.",
    "{Photos} attached: the box, the {item}, and the shipping label.",
    "Yes, the address is correct. I already asked the neighbours.",
    "Sent the {photos} through the message center. You can see it clearly.",
    "It's {order_ref}, ordered {order_date}, paid {amount}.",
    "Address is right, {house_no} {street}. I still have all the packaging.",
    "Here you go: order {order_ref}, {item}, {amount}, shipped with {carrier}.",
    "Sure, {photos} are attached. Let me know if you need anything else.",
)

BUYER_CLARIFY: _T = (
    "Can you explain that again? I'm not sure what it means for my order.",
    "So what happens now?",
    "I don't really follow. Can you check again?",
    "Could you look into it one more time please?",
    "Are you sure? Can you send me that again?",
    "What does that mean exactly?",
    "Ok but what about my {item}?",
)

SELLER_CLOSE: _T = (
    "Glad it worked out! Have a great day.",
    "{thx} for letting us know. Enjoy your {item}!",
    "No problem at all, happy to help.",
    "Great, {thx} for the update. Case closed on our side.",
    "Thanks for following up, take care.",
    "Perfect, we'll mark it as resolved.",
)

SELLER_FOLLOWUP: _T = (
    "Just checking in: did you get a chance to look at what we sent?",
    "Following up on the above. Let us know if you have any other questions.",
    "Hi, just wanted to make sure you saw our last message.",
    "Let us know if there's anything else we can do.",
)

DELIVERY = ("not_received", "late")

RESPONSE: dict[str, dict[str, _T]] = {
    "proof_valid": {
        "delivery": (
            "{shi}I {check} with {carrier}. Tracking {tracking} shows delivered on {deliv_date} at {deliv_time}, left at the front door, and the driver's GPS scan matches your address. Delivery {photo} attached.",
            "{shi}according to {carrier}, the {pkg} was signed for by {signer} on {deliv_date}. Proof of delivery with the signature is attached.",
            "{shi}tracking number {tracking} shows delivered to the mailbox at {house_no} {street} on {deliv_date}. The carrier confirmed the GPS location is your address.",
            "{shi}our records show {carrier} delivered it on {deliv_date} at {deliv_time}. The delivery {photo} shows the box at a {door} door with house number {house_no}, which matches your address.",
            "{shi}I opened a trace with {carrier}. They confirmed delivery to {house_no} {street} on {deliv_date}, signature {signer}, GPS within 10 metres of your door. I've attached their letter.",
            "{shi}the {pkg} was delivered on {deliv_date} per {carrier} ({tracking}). Their proof of delivery has a {photo} of it on your porch next to the {door} door.",
            "{shi}I can see tracking {tracking} was scanned as delivered on {deliv_date}, signed by {signer}. The address on the scan is {house_no} {street}, {city}.",
        ),
        "damaged": (
            "{shi}we photograph every order before it ships. The {photos} attached show the {item} intact and bubble-wrapped, and {carrier}'s inspection found the outer box undamaged. The serial in your {photo} ({serial2}) isn't the unit we shipped ({serial}).",
            "{shi}the damage in your {photo} is on a unit with serial {serial2}; we shipped serial {serial}. Our packing video for your order is attached.",
            "{shi}I compared your {photos} with our pre-shipment {photos}. The unit we sent has serial {serial} and was undamaged when {carrier} collected it; the one in your {photo} has a different serial ({serial2}).",
            "{shi}{carrier} inspected the parcel and their report says the box arrived with no damage. Our packing {photos} show the {item} intact, serial {serial}, and yours shows serial {serial2}.",
        ),
        "wrong_item": (
            "{shi}your order confirmation shows you selected {var_b} (line 1 of the invoice, SKU {sku}). That is what we shipped.",
            "{shi}I {check} the order: the variant chosen at checkout was {var_b}, not {var_a}. Screenshot of your order page attached.",
            "{shi}our records show order {order_ref} was placed for the {item} in {var_b}. The invoice {photo} is attached, it matches what you received.",
            "{shi}the order was placed for {var_b}, SKU {sku}, and our warehouse scan matches it. It looks like the wrong option was picked at checkout.",
        ),
        "missing_parts": (
            "{shi}the {part} {is_are} in the small compartment under the foam insert, see page {page} of the manual. Our packing checklist for your order is attached.",
            "{shi}we weigh every box before shipping. Yours weighed {weight} kg, which matches a complete kit including the {part}. They're usually taped inside the lid.",
            "{shi}the {part} {is_are} packed in a separate envelope inside the manual sleeve. Our packing {photo} for order {order_ref} shows {it_them} going in.",
            "{shi}the listing says the {part} {is_are} sold separately, see the last line of the description. The kit you bought doesn't include {it_them}.",
        ),
        "not_as_described": (
            "{shi}the listing states '{nad_disclosure}' in the description, and {photo} {photo_n} shows exactly that. We shipped the item as described.",
            "{shi}I've attached a screenshot of the listing you bought from. It says '{nad_disclosure}' right under the price.",
            "{shi}the description on order {order_ref} reads '{nad_disclosure}'. The {item} you received matches that listing.",
            "{shi}we disclosed '{nad_disclosure}' in the title and the description, screenshot attached.",
        ),
    },
    "proof_invalid": {
        "delivery": (
            "{shi}here's the tracking: {tracking}. It says label created on {ship_date}, {carrier} should scan it soon.",
            "{shi}tracking {tracking} shows in transit since {ship_date}. It hasn't updated but it's on the way, please be patient.",
            "{shi}I shipped it on {ship_date}. I don't have a tracking number for this one but I definitely sent it.",
            "{shi}our system has tracking {tracking}, but {carrier}'s site says the number isn't found yet. It can take a while to update.",
            "{shi}last scan was at the {hub} facility on {ship_date}, no updates since then, but these things happen.",
            "{shi}the tracking I have is {tracking}. I know it only shows pre-shipment but it did go out.",
            "{shi}tracking {tracking} says delivered on {deliv_date}, but to ZIP {other_zip}. It may have gone to the wrong post office, it should get rerouted.",
        ),
        "item": (
            "{shi}everything leaves our warehouse in perfect condition, so I'm not sure what happened. I don't have {photos} of your specific order.",
            "{shi}our pick list says it was packed correctly. We don't keep {photos} but our staff are careful.",
            "{shi}I checked and the serial in your {photo} ({serial}) is the unit we shipped. It must have happened after it left us.",
            "{shi}all our items are checked before shipping, I can't see how that happened. Here's our packing slip (no {photos} I'm afraid).",
            "{shi}the listing {photos} are stock images, so some differences are possible. The packing slip shows we sent order {order_ref}.",
            "{shi}I can confirm we shipped order {order_ref} with tracking {tracking}. Our packer says it was fine.",
        ),
    },
    "remedy_full": {
        "any": (
            "{shi}{sorry} about that! I've issued a full refund of {amount} to your original payment method. It should show in 3-5 business days.",
            "{shi}apologies. A replacement {item} shipped today with {carrier}, tracking {tracking2}. No need to return the original.",
            "{shi}I've sent you a prepaid return label. I've also refunded the full {amount} already, so don't wait on us.",
            "{shi}refund of {amount} processed just now, reference {refund_ref}. {sorry} for the trouble.",
            "{shi}no problem, we've refunded your order in full ({amount}). You'll get an email from the payment provider.",
            "{shi}I'm sending a new {item} today by express, and you can keep the first one. Tracking {tracking2}.",
            "{shi}full refund issued for order {order_ref}. {sorry} again, this shouldn't have happened.",
        ),
    },
    "remedy_partial": {
        "any": (
            "{shi}{sorry} for the trouble. I can offer a partial refund of {partial} and you keep the {item}. Would that work?",
            "{shi}we can refund {partial} to make up for it, or you can return the whole thing with a return label. Let me know.",
            "{shi}how about {pct}% back ({partial})? That's the best I can do on this one.",
            "{shi}I'd like to make this right. Would a partial refund of {partial} be ok?",
            "{shi}I can send {partial} back now as a goodwill gesture. Please confirm and I'll process it.",
        ),
    },
    "ignore": {
        "any": (
            "Thank you for contacting {shop}! Our team will respond within 48 hours.",
            "This is an automated message. Your order {order_ref} has shipped. Tracking: {tracking}.",
            "Auto-reply: we are currently out of office and will answer your message as soon as possible.",
            "Thanks for your message! We're experiencing high volumes and will get back to you shortly.",
        ),
    },
    "refuse": {
        "delivery": (
            "{shi}we shipped the order. There's nothing more we can do on our end.",
            "{shi}once the item leaves our warehouse it's your responsibility. We won't be refunding this.",
            "{shi}all sales are final as per our policy. We can't refund orders that have shipped.",
            "{shi}we sent it out on {ship_date}. We don't do refunds for lost mail, sorry.",
            "{shi}I'm not able to refund this. We did our part by sending it.",
        ),
        "item": (
            "{shi}it was fine when it left us. We don't accept damage claims.",
            "{shi}all sales are final as per our policy. No returns or refunds.",
            "{shi}we don't offer refunds on this item, it says so in our shop policies.",
            "{shi}sorry but we can't help with this one. Our policy is no returns after delivery.",
            "{shi}we won't refund this. You'd have to send it back at your own cost and even then it's store credit only.",
        ),
    },
    "blame_carrier": {
        "delivery": (
            "{shi}that's a {carrier} problem, not ours. Please file a claim with them.",
            "{shi}once we hand it to {carrier} it's out of our hands. You'll need to contact them about the {pkg}.",
            "{shi}we gave the parcel to {carrier} on {ship_date}, tracking {tracking}. Anything after that is on them.",
            "{shi}{carrier} has been losing a lot of parcels lately. You should ask them, we can't do anything.",
            "{shi}please contact {carrier} directly with tracking {tracking}, they handle lost packages.",
        ),
        "item": (
            "{shi}the damage must have happened in transit. Please open a claim with {carrier}; we're not responsible for their handling.",
            "{shi}it left us in good shape, so this is on {carrier}. You'll have to file with them.",
            "{shi}{carrier} must have mixed something up. Please contact them, it's not something we can fix.",
            "{shi}that sounds like a carrier issue. {carrier} has a claims form on their website.",
        ),
    },
}

FINAL: dict[str, dict[str, _T]] = {
    "confirms": {
        "delivery": (
            "{hi}update: found the {pkg}! {found_cap}. Sorry for the hassle, please disregard.",
            "{hi}it arrived today, a few days late but it's here. All good, {thx}.",
            "{hi}my {relative} had taken it in, I just saw it. The case can be closed.",
            "Oh, {found}. So sorry, I have the {item} now.",
            "{hi}just wanted to say the {pkg} showed up this morning. {thx}!",
            "{hi}false alarm, I received it. {found_cap}.",
            "Got it! {found_cap}. {thx} for your patience.",
        ),
        "damaged": (
            "{hi}turns out only the outer box was damaged. The {item} itself works fine after all. {thx}.",
            "{hi}I tested it again and it works, I must have set it up wrong. Sorry!",
            "{hi}the mark wipes right off, it was just dust on the packaging. All good.",
            "Looked again and the {item} is fine, it was the box that got bashed. No problem.",
        ),
        "wrong_item": (
            "Oh, I just checked my order confirmation and I did pick {var_b}. My mistake, sorry!",
            "{hi}you're right, I clicked the wrong option. I'll keep it, no issue.",
            "{hi}my {relative} ordered it on my account and chose {var_b}. Sorry for the confusion.",
            "{hi}checked again and it is actually the {var_a} one, the box label was just misprinted. All good.",
        ),
        "missing_parts": (
            "{hi}found the {part}, {it_they} {was_were} under the foam insert. All good now.",
            "Found {it_them}! {it_they_cap} {was_were} taped inside the lid. {thx}.",
            "{hi}my {relative} had already unpacked the {part}. Sorry, everything is here.",
            "{hi}never mind, the {part} {was_were} in the manual sleeve. Works great.",
        ),
        "not_as_described": (
            "{hi}looked at it again in daylight and it matches the listing. I overreacted, sorry.",
            "{hi}you're right, I missed that in the description. I'm happy with it.",
            "{hi}I re-read the listing and it's exactly what was described. My bad.",
            "{hi}after using it for a day it's fine, it's what the listing said. {thx}.",
        ),
    },
    "withdraws": {
        "any": (
            "{hi}I'm going to close the case, no need to do anything further.",
            "Please ignore my previous messages, I've withdrawn the claim.",
            "{hi}I'll withdraw the dispute. Sorry for the trouble.",
            "Never mind, I've sorted it out on my end. Closing the request.",
            "{hi}I've cancelled the case with {platform}. Please disregard.",
            "{hi}on second thought I'm dropping the claim. {thx} for your time.",
        ),
    },
    "acknowledges": {
        # proof_valid: buyer accepts the evidence (label 1)
        "proof_valid": (
            "Ok, I see the {photo}. I'll ask around the building.",
            "{thx} for the info, I'll check with my neighbours.",
            "Understood, {thx} for looking into it.",
            "Ok, fair enough.",
            "Alright, I see it now. {thx}.",
            "Ok, {thx} for letting me know.",
        ),
        "remedy_full": (
            "Refund came through, {thx}!",
            "Got the replacement, {thx} so much.",
            "{thx}, I see the refund on my statement.",
            "Ok, {thx} for letting me know.",
            "Great, that works. {thx}.",
            "Perfect, {thx} for sorting it out.",
        ),
        "remedy_partial": (
            "Ok, {partial} works for me, {thx}.",
            "Fine, I'll accept the partial refund.",
            "That's fair, please go ahead with the {partial}.",
            "Ok, deal. {thx}.",
            "Alright, {partial} back is fine, I'll keep the {item}.",
        ),
        # label-0 resignation
        "other": (
            "Ok, I'll wait a few more days I guess.",
            "Fine, I'll contact {carrier} then.",
            "Alright, I'll keep an eye on the tracking.",
            "Ok, {thx} for letting me know.",
            "Ok. Still waiting to hear back about my {item} then.",
            "I see. I'll try {carrier} and see what they say.",
            "Ok, understood.",
        ),
    },
    "disputes_generic": {
        "any": (
            "This is unacceptable. I'm going to {esc} with {platform}.",
            "I want my money back, end of story. I'm going to {esc}.",
            "Terrible service. I'm filing a chargeback with {platform}.",
            "I don't care, I want a full refund or I'll {esc}.",
            "Not good enough. I've escalated this to {platform}.",
            "Honestly I'm {upset}. Leaving a bad review and opening a dispute.",
            "I'm done talking, {platform} can sort this out.",
        ),
        "proof_valid": (
            "I don't care what the tracking says, I want my money back. I'm going to {esc}.",
            "Whatever your {photo} shows, I'm {upset} and I'm filing a chargeback.",
            "That doesn't change anything, I'm escalating to {platform}.",
        ),
    },
    "disputes_specific": {
        "proof_valid_delivery": (
            "The delivery {photo} shows a {door} door, my door is {door2}. That's not my house.",
            "Nobody named {signer} lives here and I didn't sign anything. The signature isn't mine.",
            "The GPS scan is {blocks} blocks from my address. I have doorbell camera footage showing no delivery that day.",
            "That house number in the {photo} is not {house_no}. {carrier} delivered it to the wrong address.",
            "I was at work on {deliv_date}, so who signed as {signer}? {carrier} confirmed to me it was left at another address.",
        ),
        "damaged": (
            "I've attached a clearer {photo}: the serial on my unit is {serial}, the same one you shipped, and it's broken.",
            "Your {photo} is of a different box. Mine had a different label and arrived damaged, {photos} attached.",
            "{carrier} never inspected anything, they told me no report exists. The {item} arrived broken, serial {serial} is on the back.",
        ),
        "wrong_item": (
            "My order confirmation email (attached) clearly says {var_a}, not {var_b}.",
            "I never chose {var_b}. The screenshot of my cart from {order_date} shows {var_a} at {amount}.",
            "Your invoice has a different SKU to my receipt. I ordered {var_a}, see attached.",
        ),
        "missing_parts": (
            "There's no compartment under the foam. My unboxing video shows the {part} {is_are} not there.",
            "The listing says the {part} {is_are} included, screenshot attached. Nothing in the lid or the sleeve.",
            "I unpacked every layer on camera, no {part}. Weight means nothing if {it_they} {is_are}n't in the box.",
        ),
        "not_as_described": (
            "The listing I bought from said 'brand new' and nothing about '{nad_disclosure}', screenshot attached from the day I ordered.",
            "You edited the listing after I bought it. My saved copy doesn't mention '{nad_disclosure}' anywhere.",
            "Even so, {nad_issue}, and that's not what the {photos} showed. I'm filing a not-as-described claim.",
        ),
        "proof_invalid_delivery": (
            "That tracking number shows 'label created' only, it was never scanned by {carrier}.",
            "{carrier} says that number doesn't exist. I still have nothing.",
            "Tracking {tracking} hasn't moved in {days} days. That's not proof of anything.",
            "I checked the tracking, it shows a delivery in {other_city}. That's not where I live.",
            "No tracking means no proof it was ever sent. I've opened a case with {platform}.",
        ),
        "proof_invalid_item": (
            "You just admitted you have no {photos} and no proof. I've sent mine, the item is clearly not right.",
            "The serial matching just proves it's your unit and it arrived like this.",
            "A packing slip doesn't show what was in the box. My {photos} do, and I've sent them to {platform}.",
            "Tracking only shows it was shipped, not what condition it was in. I'm escalating with my {photos}.",
        ),
        "remedy_full": (
            "It's been {days} days and there's no refund on my statement.",
            "The replacement tracking {tracking2} hasn't moved in a week. Still no {item}.",
            "I never got any refund, and the reference number you gave doesn't show up with {platform}.",
            "The replacement arrived with the same problem. I'm escalating.",
        ),
        "remedy_partial": (
            "{partial} for a {amount} item? No. I want a full refund.",
            "A partial refund doesn't cover it, the {item} is unusable. I'm escalating.",
            "No, I'm not keeping a broken item for {partial}. Full refund please.",
            "That offer is insulting. I paid {amount}, I'm going to {esc}.",
        ),
        "other_delivery": (
            "Under {platform}'s policy the seller is responsible until delivery. I've escalated.",
            "{carrier} told me only the shipper can open a trace, so it's on you. I've opened a case.",
            "It's been {days} days, I still have no {pkg}, and nobody has given me any proof it was delivered.",
            "{days} days and no real answer. I've opened a case with {platform} with screenshots of the tracking.",
            "The tracking has said the same thing for two weeks. I've reported it as not received.",
        ),
        "other_item": (
            "I'm escalating, you haven't addressed the problem at all. {Photos} are attached to the case.",
            "It's your job to pack it properly. {carrier} told me the seller has to file the claim.",
            "{days} days and no answer. I've opened a case with {platform} with all my {photos}.",
            "I have the {photos} and the original box. The item was never right, I'm filing a claim.",
            "Your listing promised something else, and my {photos} prove it. Case opened with {platform}.",
        ),
    },
}

# The seller's bottom line, appended to the substantive response most of the time: real sellers
# state their position in plain words, and how sure they sound differs by what they can show.
STANCE: dict[str, dict[str, _T]] = {
    "proof_valid": {
        "delivery": (
            "Everything checks out on our side: the {pkg} reached your address.",
            "The carrier's evidence is clear, it was delivered to you.",
            "So the delivery is confirmed and verified by {carrier}.",
            "All the records agree that it arrived at your door.",
            "I'm confident it was delivered as addressed.",
        ),
        "item": (
            "Everything checks out on our side: we sent exactly what was ordered, in perfect condition.",
            "Our records are clear and they match the listing and your order.",
            "So the evidence shows the {item} left us correct and complete.",
            "I'm confident the order was right when it was shipped.",
            "All our records agree on what was in the box.",
        ),
    },
    "proof_invalid": {
        "any": (
            "I'm afraid that's all the information I have.",
            "I can't really show you anything more than that, sorry.",
            "I'm not sure what else to tell you, hopefully it sorts itself out.",
            "Honestly I don't know what happened, I can't check any further.",
            "That's the best I can find, I don't have anything else.",
        ),
    },
    "remedy_full": {
        "any": (
            "You won't be out of pocket, and there's nothing you need to send back.",
            "Sorry again, that's all taken care of now.",
            "It's on us, you don't have to do anything else.",
            "Consider it fully sorted on our end.",
        ),
    },
    "remedy_partial": {
        "any": (
            "Let me know if that works for you.",
            "It's the most I can offer on this order.",
            "Just reply to accept and I'll send it over.",
            "That's my offer, up to you.",
        ),
    },
    "refuse": {
        "any": (
            "Our decision is final.",
            "We won't be discussing this further.",
            "There is nothing else we will do about it.",
        ),
    },
    "blame_carrier": {
        "any": (
            "It's the carrier's responsibility from here.",
            "We can't help you further with this.",
            "Please take it up with the carrier, not us.",
        ),
    },
}

# The buyer's bottom line, appended to the final message most of the time: a buyer who found the
# parcel says the matter is over, one who disputes with evidence points at it, one who disputes
# without any just insists.
FINAL_TAG: dict[str, _T] = {
    "confirms": (
        "So there's no problem after all, you can close this.",
        "My mistake, everything is fine now.",
        "All sorted, nothing for you to do.",
        "Sorry to have bothered you, it's all good.",
    ),
    "withdraws": (
        "No further action needed from you.",
        "Consider the matter closed.",
        "Sorry to have bothered you, it's all good.",
    ),
    "disputes_generic": (
        "I'm not going to explain myself again.",
        "I don't want excuses, just my money.",
        "I'm not interested in your explanations.",
        "Don't bother replying with more excuses.",
    ),
    "disputes_specific": (
        "The facts are on my side and I can show them.",
        "I've documented all of this and sent it to {platform}.",
        "That evidence settles it in my favour.",
        "I've kept every record of this, it's all in the case.",
    ),
}

BUYER_CHASE: _T = (
    "Hello? Any update on this?",
    "Still no response. It's been {days} days.",
    "Hi, just following up on my message above.",
    "Can someone please get back to me about order {order_ref}?",
    "Is anyone there?",
    "Following up again, still waiting on an answer.",
)

# Long-record filler (neutral w.r.t. the label).
RAMBLE: _T = (
    "I've been a customer of yours for years and never had a problem like this before.",
    "This was supposed to be for {occasion} so the timing really matters to me.",
    "I've spent about an hour on the phone already and I keep getting transferred between departments.",
    "Last time I ordered something similar from another shop it came in two days with no issues at all.",
    "I also ordered a couple of other things that week, and those all came through fine with {carrier}.",
    "I don't want to be difficult, I just want to understand what happened with the {item}.",
    "I read the reviews before buying and most people seemed happy, which is why I chose your shop.",
    "I paid {amount} which is a lot of money for me right now, so I'm keeping a close eye on it.",
    "The weather here has been awful, lots of rain, and the roads around {city} were flooded for a couple of days.",
    "I took screenshots of everything, the listing, the order page, the tracking page and the emails.",
    "I'm writing this on my phone so sorry if it's a bit long or there are typos.",
    "Just so you have all the details, the order was placed on {order_date} from my laptop using my {platform2} account.",
    "We're also in the middle of moving house, so things are a bit chaotic around here.",
    "I checked the spam folder too in case there were any emails from you or from {carrier}.",
    "The listing photos looked great and the price was fair, so I was excited to get the {item}.",
    "I'd really prefer to sort this out directly with you rather than going through anyone else.",
    "My {relative} thinks I should just wait, but I'd rather get a clear answer.",
    "I'm not sure if it matters, but the {pkg} was meant to come on a {weekday}.",
    "I've also left a message with {carrier} customer service, they said someone would call me back within 24 to 48 hours.",
    "I don't usually write long messages like this but I want to make sure nothing gets lost in translation.",
    "The checkout page said estimated delivery {eta_date}, and I planned around that date.",
    "When I spoke to the first agent they told me to contact the seller, which is why I'm writing to you again.",
    "I don't know if it helps, but the order confirmation email said it would be shipped within 1 business day.",
    "I'd appreciate it if you could read through all of this before replying.",
)
RAMBLE_KIND: dict[str, _T] = {
    "delivery": (
        "My {relative} was home most of that week and nobody rang the bell or knocked.",
        "I work nights, so I usually sleep during the day, which is why I asked for packages to be left at the back.",
        "Our building has a mail room but it's only staffed in the mornings, and the staff change every few weeks.",
        "My neighbours have had issues with deliveries too, I think the route driver changed recently.",
        "For context, I live in a {housing} and deliveries usually get left by the {spot}.",
        "I have been checking the tracking page several times a day and refreshing the app.",
        "I even walked around the block in case it was left at the wrong house.",
        "We have a doorbell camera but it only keeps recordings for a few days.",
    ),
    "item": (
        "I opened the box carefully with scissors along the tape, so nothing was damaged by me.",
        "I kept all of the packaging, the inner bag and the foam, in case you need them.",
        "I followed the instructions step by step and watched a setup video online as well.",
        "My {relative} was there when I opened it and saw the whole thing.",
        "For context, I live in a {housing} and the box sat by the {spot} for maybe an hour.",
        "I compared it side by side with the photos on the listing page.",
        "I've read the manual twice now, front to back.",
        "I've had the same product from another seller before, so I know what it should look like.",
    ),
}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
HOUSING = (
    "small apartment block",
    "townhouse",
    "duplex",
    "house at the end of a long driveway",
    "third-floor walk-up",
    "gated community",
    "condo building",
)
SPOTS = ("front door", "garage", "side gate", "mailboxes", "back porch", "lobby")
PLATFORMS2 = ("eBay", "Etsy", "Amazon", "Google", "Apple", "shop")

SELLER_HOLD: _T = (
    "{shi}Thanks for your patience, we're still looking into this and will get back to you.",
    "{shi}We've received your message and passed it to our fulfilment team.",
    "{shi}Sorry for the slow reply, we've had a lot of messages this week. Looking into it now.",
    "{shi}Noted, I'll need a day or two to check with the warehouse.",
)

POLICY = (
    "For reference, here is our shop policy: Orders are processed within 1-2 business days. "
    "Shipping times are estimates provided by the carrier and are not guaranteed. "
    "Once an order has been handed to the carrier, tracking information will be sent by email. "
    "If your order has not arrived within 10 business days of the estimated delivery date, please contact us and we will open an investigation with the carrier. "
    "Items must be returned within 30 days in their original condition and packaging. "
    "Return shipping costs are the responsibility of the buyer unless the item arrived damaged or not as described. "
    "For damage claims we ask for clear photos of the item, the inner packaging and the outer box including the shipping label. "
    "Refunds are issued to the original payment method within 5 business days of receiving the return. "
    "Custom and personalised items cannot be returned unless faulty. "
    "We reserve the right to refuse claims that do not follow this policy. "
    "Please allow 24 to 48 hours for a reply to messages, excluding weekends and public holidays. "
    "Thank you for shopping with us and for understanding that we are a small team doing our best."
)
