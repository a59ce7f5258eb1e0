"""Alt-text captions with the rules' expectations, shared by the alt-text and tagging tests: caption -> the
substrings every negative must keep, and captions by kind (all caps, other languages, plain English)."""

# caption -> the substrings every negative must keep exactly as they are
PROTECTED = {
    "Basmati Rice 2lb Bag with a Wooden Spoon": ["2lb"],
    "Round Oak Table 66cm with a White Chair": ["66cm"],
    "<strong>Red dress</strong> for a summer party": ["<strong>Red", "dress</strong>"],
    'Blue shirt with a pocket <div class="product-title main">': ['<div class="product-title main">'],
    "visit www.example.com/red-dress.html for a red dress and a hat": ["www.example.com/red-dress.html"],
    "may-in-hp-laserjet-pro-m402dn printer on a wooden desk": ["may-in-hp-laserjet-pro-m402dn"],
    "A man in a T-shirt holds a close-up photo of a dog": ["T-shirt", "close-up"],
    "Salt &amp; Pepper Shakers on a kitchen table": ["&amp;"],
    "red_summer_dress.jpg of a woman in a garden": ["red_summer_dress.jpg"],
    "Madison Wing Dining Chair--Beige with a cushion": ["Chair--Beige"],
    # joined by the replacement character of a lost one (LAION-2B alt-text), by an emoji, by a symbol
    "google backtracks\ufffda bit\ufffdon controversial chrome signin": ["backtracks\ufffda", "bit\ufffdon"],
    "a cozy seat\U0001F60Arecliner sofa in a living room": ["seat\U0001F60Arecliner"],
    "a dog\u2122s bed on a rug by the door": ["dog\u2122s"],
    # half of a joined word, written with a stray space
    "a salt& pepper shaker on a wooden table": ["salt&"],
}
NAMES = {
    "The Roots - You Got Me feat Erykah Badu": ["Erykah Badu"],
    "Kitchen Cabinet Storage Ideas by Larder With Fridge Freezer": [],
    "Vintage Leather Handbag by Chanel with Gold Chain": ["Chanel"],
}
# names, titles and labels made of dictionary words: found from where they stand (caption -> the
# substrings every negative must keep; each caption has other words that do get edited)
TITLES = {
    "Apple cake - Stock Photo": ["Stock Photo"],
    "Purple witch's hat Royalty Free Stock Photos": ["Royalty Free Stock Photos"],
    # the stock-photo label in the sites' other languages (LAION-400M alt-text, as in test_names)
    "Stock fotografie: Boy playing with blocks": ["Stock fotografie"],
    "Elderly man helping his wife to cut vegetables in the kitchen — Foto Stock": ["Foto Stock"],
    "Red roses | Christmas World": ["Christmas World"],
    "Wooden Kitchen Table with Four Chairs by Orange Tree Toys": ["Orange Tree Toys"],
    "Starting Lineup 1996 Edition Football Figurine": ["Starting Lineup"],
    "Red Leather Case For The Walking Dead Fans": ["The Walking Dead Fans"],
    # a title's second word with a capital inside it ("iPad": LAION-400M alt-text, as in test_names)
    "Wild Irish Rose Cover For The iPad Mini": ["The iPad Mini"],
    "Happy women at the Elite Junior World Championships": ["Elite Junior World Championships"],
    "Black Leather Handbag - Langdon Farm": ["Langdon Farm"],
    "Transatlantic Rebels: Wooden Chair and Oak Table": ["Transatlantic Rebels"],
    "myveganlife loves red apples and hot coffee": ["myveganlife"],
    # written as CSV fields, doubled quotes and all (LAION-400M alt-text): the quoted name and title are
    # kept, and the rest of the caption is edited (the whole caption was taken as one quote before)
    '"""Nike"" Fashion Top Jacket Pants Sweatpants Set Two-Piece Sportswear"': ['""Nike""'],
    '"""Hunger Games"" Figurative Language Lesson Activity Worksheet"': ['""Hunger Games""'],
    # a field written into a field again (LAION-2B alt-text): read twice, so the rest is edited
    '"""""""Boy with Luv"""" pink look"""': ['"""""""Boy with Luv""""'],
    '"""24"""" Professional Tile Cutter"""': ['24""""'],
}
CAPS = ["BLACK LEATHER SOFA WITH RED CUSHIONS", "WOODEN DINING TABLE WITH FOUR CHAIRS",
        "A BIPLANE AND A SMALL BOAT OUT ON THE WATER"]
OTHER_LANGUAGES = ["Damen Handtasche aus echtem Leder in Schwarz mit goldener Kette",
                   "レディース ハンドバッグ 本革 ブラック",
                   "حقيبة يد نسائية من الجلد الأسود"]
# short captions in another language that CLD2 calls English, reliably by its own flag
CLD2_ENGLISH = ["Collier initiale A or, J04382-02-A, hi-res", "Dywan shaggy Osta Carpets RHAPSODY bordo",
                "Come preparare e attuare un piano di marketing", "Wood Helmut Jacket noir"]
PLAIN = ["A dog chases a cat on the grass.", "Two men are riding horses on the beach.",
         "A red bus parked next to a tall building.", "A woman holding an umbrella walks down a rainy street.",
         "A small kitchen with a wooden table and a white chair.", "A black leather sofa with red cushions.",
         "A living room featuring a comfortable seating arrangement of chairs and tables.",
         "A café with a naïve waiter near a chair.", "A photo of a dog on a bed."]
# short English captions with a word no dictionary holds: still English
SHORT_ENGLISH = ["itunes movie sale", "Black hoodie with a hood", "Little biker on a red bike"]


def all_captions():
    return (list(PROTECTED) + list(NAMES) + list(TITLES) + CAPS + OTHER_LANGUAGES + CLD2_ENGLISH + PLAIN
            + SHORT_ENGLISH)
