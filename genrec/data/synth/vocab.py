"""The hand-written grocery vocabulary of the synthetic world: a department > aisle > leaf taxonomy whose
leaves list product nouns, variants and pack sizes, the word pools brands are made of, and the complement
rules planted into baskets. Kept as plain text so product titles read like a real catalog."""
from __future__ import annotations

from dataclasses import dataclass

# Each department: (name, organic variants allowed, brand first words, brand second words, aisles); each
# aisle: (name, leaves); each leaf: "name = nouns; modifiers; sizes" with alternatives separated by "|".
_DEPARTMENTS = (
    ("dairy & eggs", True, "Alpine|Meadow|Clover|Bluebell|Hillside|Green Pasture|Dale|Brookside",
     "Farms|Creamery|Dairy|Valley", (
         ("milk & cream", (
             "milk = Whole Milk|Semi-Skimmed Milk|Skimmed Milk|Lactose-Free Milk|Chocolate Milk; "
             "Fresh|Filtered|Pasteurised|Farmhouse|Homogenised; 1L|2L|4 pint",
             "cream = Double Cream|Single Cream|Whipping Cream|Sour Cream|Coffee Creamer|Creme Fraiche; "
             "Thick|Light|Extra Thick|Cultured|Rich; 150ml|300ml|600ml",
             "plant milk = Oat Milk|Almond Milk|Soy Milk|Coconut Drink|Rice Drink|Cashew Milk; "
             "Unsweetened|Barista|Original|Vanilla|Chocolate; 1L|6x1L",
         )),
         ("cheese", (
             "hard cheese = Gouda|Cheddar|Parmesan|Gruyere|Manchego|Emmental|Pecorino; "
             "Aged|Mature|Mild|Smoked|Extra Sharp|Vintage; 200g|400g|1kg",
             "soft cheese = Brie|Camembert|Goat Cheese|Mozzarella|Feta|Ricotta; "
             "Creamy|Fresh|Baby|Herbed|Double Cream; 125g|200g|250g",
             "sliced cheese = Cheddar Slices|Swiss Slices|Provolone Slices|American Slices|Havarti Slices; "
             "Thin|Deli|Smoked|Mild|Light; 8 slices|12 slices|24 slices",
         )),
         ("yogurt", (
             "greek yogurt = Greek Yogurt|Skyr|Strained Yogurt|Labneh; "
             "Plain|Honey|Vanilla|Fat-Free|Whole Milk; 150g|500g|1kg",
             "fruit yogurt = Strawberry Yogurt|Blueberry Yogurt|Peach Yogurt|Raspberry Yogurt|Cherry Yogurt|"
             "Mango Yogurt; Low Fat|Creamy|Swiss Style|Light|Whole Milk; 4x125g|500g",
             "drinkable yogurt = Yogurt Drink|Kefir|Lassi|Probiotic Shot; "
             "Strawberry|Plain|Mango|Vanilla|Mixed Berry; 250ml|500ml|6x100ml",
         )),
         ("eggs & butter", (
             "eggs = Free Range Eggs|Large Eggs|Medium Eggs|Duck Eggs|Quail Eggs; "
             "Barn|Pasture Raised|Cage Free|Omega-3|Brown; 6 pack|12 pack|18 pack",
             "butter = Salted Butter|Unsalted Butter|Spreadable Butter|Cultured Butter|Ghee; "
             "Farmhouse|Churned|Irish|Slightly Salted|Grass-Fed; 250g|500g",
             "margarine & spreads = Margarine|Olive Spread|Plant Butter|Sunflower Spread; "
             "Light|Original|Reduced Fat|Buttery|Dairy-Free; 250g|500g|1kg",
         )),
     )),
    ("produce", True, "Sunny|Orchard|Green Leaf|Harvest|Fresh Fields|Evergreen|Riverbend|Golden Acre",
     "Growers|Gardens|Produce|Orchards", (
         ("fresh fruit", (
             "apples & pears = Gala Apples|Granny Smith Apples|Honeycrisp Apples|Conference Pears|"
             "Bartlett Pears|Fuji Apples; Crisp|Sweet|Juicy|Loose|Premium; 4 pack|1kg|2kg",
             "berries = Strawberries|Blueberries|Raspberries|Blackberries|Mixed Berries; "
             "Sweet|Ripe|Seasonal|Jumbo|Wild; 150g|250g|400g",
             "citrus = Lemons|Limes|Oranges|Clementines|Grapefruit; "
             "Juicy|Seedless|Easy Peel|Unwaxed|Sweet; 3 pack|5 pack|1kg",
         )),
         ("fresh vegetables", (
             "leafy greens = Baby Spinach|Kale|Romaine Lettuce|Rocket|Iceberg Lettuce|Swiss Chard; "
             "Washed|Young|Crisp|Tender|Curly; 100g|200g|300g",
             "root vegetables = Potatoes|Carrots|Sweet Potatoes|Beetroot|Parsnips|Onions; "
             "Baby|Washed|Loose|Baking|Red; 500g|1kg|2.5kg",
             "tomatoes & peppers = Cherry Tomatoes|Vine Tomatoes|Bell Peppers|Plum Tomatoes|Mini Peppers; "
             "Sweet|Ripe|Mixed|Heirloom|Red; 250g|500g|3 pack",
         )),
         ("herbs & salads", (
             "fresh herbs = Basil|Coriander|Parsley|Dill|Mint|Rosemary; "
             "Fresh|Potted|Flat Leaf|Sweet|Cut; 20g|30g|1 pot",
             "salad kits = Caesar Salad Kit|Greek Salad Kit|Asian Slaw Kit|Garden Salad|Coleslaw Mix; "
             "Classic|Crunchy|Chopped|Family|Light; 200g|300g|450g",
             "mushrooms = Button Mushrooms|Chestnut Mushrooms|Portobello Mushrooms|Shiitake Mushrooms|"
             "Oyster Mushrooms; Sliced|Whole|Baby|Large|Mixed; 150g|250g|400g",
         )),
         ("tropical & stone fruit", (
             "bananas = Bananas|Plantains|Baby Bananas|Red Bananas; "
             "Ripe|Fairtrade|Ripen at Home|Loose|Sweet; 5 pack|1kg|bunch",
             "grapes & melons = Red Grapes|Green Grapes|Watermelon|Cantaloupe|Honeydew Melon; "
             "Seedless|Sweet|Mini|Chilled|Sliced; 500g|1kg|whole",
             "avocados & mangoes = Avocados|Mangoes|Pineapple|Papaya|Kiwi Fruit; "
             "Ripe & Ready|Large|Hass|Sweet|Golden; 2 pack|4 pack|1 each",
         )),
     )),
    ("bakery", True, "Hearth|Stonemill|Golden Crust|Village|Old Mill|Rustic Oven|Baker's|Sunbeam",
     "Bakery|Bakehouse|Breads|Ovens", (
         ("bread", (
             "sliced bread = White Bread|Wholemeal Bread|Multigrain Bread|Rye Bread|Seeded Bread|"
             "Brioche Loaf; Soft|Thick Sliced|Medium Sliced|Toastie|Farmhouse; 400g|800g",
             "artisan bread = Sourdough|Baguette|Ciabatta|Focaccia|Country Loaf|Pumpernickel; "
             "Stone Baked|Rustic|Crusty|Olive|Rosemary; 1 loaf|400g|2 pack",
             "wraps & flatbreads = Tortilla Wraps|Pitta Bread|Naan Bread|Flatbreads|Lavash; "
             "Plain|Wholemeal|Garlic|Mini|Seeded; 4 pack|6 pack|8 pack",
         )),
         ("rolls & buns", (
             "burger buns = Burger Buns|Brioche Buns|Sesame Buns|Potato Buns|Pretzel Buns; "
             "Soft|Toasted|Large|Seeded|Golden; 4 pack|6 pack|8 pack",
             "hot dog buns = Hot Dog Rolls|Sub Rolls|Finger Rolls|Brioche Hot Dog Buns; "
             "Soft|Long|White|Split Top|Sliced; 6 pack|8 pack|12 pack",
             "dinner rolls = Dinner Rolls|Bagels|English Muffins|Crumpets|Ciabatta Rolls; "
             "Plain|Sesame|Cinnamon Raisin|Wholemeal|Everything; 4 pack|6 pack|12 pack",
         )),
         ("pastries", (
             "croissants = Croissants|Pain au Chocolat|Almond Croissants|Cinnamon Swirls|Danish Pastries; "
             "Butter|All-Butter|Mini|Flaky|Fresh Baked; 2 pack|4 pack|8 pack",
             "muffins = Blueberry Muffins|Chocolate Chip Muffins|Banana Muffins|Lemon Muffins|Bran Muffins; "
             "Double|Mini|Jumbo|Fresh Baked|Reduced Sugar; 2 pack|4 pack|6 pack",
             "donuts = Glazed Donuts|Jam Donuts|Chocolate Donuts|Cinnamon Donuts|Ring Donuts; "
             "Classic|Mini|Iced|Sugared|Filled; 4 pack|6 pack|12 pack",
         )),
         ("cakes & pies", (
             "cakes = Chocolate Cake|Carrot Cake|Lemon Drizzle Cake|Victoria Sponge|Red Velvet Cake; "
             "Layered|Mini|Iced|Loaf|Celebration; 1 each|400g|6 slices",
             "bakery cookies = Chocolate Chip Cookies|Oatmeal Raisin Cookies|Shortbread|"
             "Double Chocolate Cookies|Macadamia Cookies; Soft Baked|Chunky|Giant|Crispy|Fresh Baked; "
             "4 pack|8 pack|200g",
             "pies & tarts = Apple Pie|Cherry Pie|Pecan Pie|Lemon Tart|Custard Tart; "
             "Deep Filled|Lattice|Mini|Rustic|Family; 1 each|4 pack|600g",
         )),
     )),
    ("meat & seafood", True, "Prairie|Ridge|Coastal|Heritage|Blue Harbor|Oakwood|Redstone|Northern",
     "Meats|Butchers|Ranch|Provisions", (
         ("beef", (
             "ground beef = Ground Beef|Beef Mince|Lean Beef Mince|Beef Burgers|Meatballs; "
             "5% Fat|10% Fat|20% Fat|Grass-Fed|Angus; 400g|500g|1kg",
             "steaks = Ribeye Steak|Sirloin Steak|Fillet Steak|Rump Steak|Flank Steak; "
             "Aged|Grass-Fed|Angus|Marbled|Thick Cut; 225g|2 pack|500g",
             "beef roasts = Topside Roast|Brisket|Silverside|Rib Roast|Chuck Roast; "
             "Slow Cook|Rolled|Boneless|Grass-Fed|Prime; 1kg|1.5kg|2kg",
         )),
         ("poultry", (
             "chicken breast = Chicken Breast Fillets|Chicken Mini Fillets|Diced Chicken Breast|"
             "Chicken Breast Strips; Free Range|Skinless|Corn-Fed|Marinated|Boneless; 300g|600g|1kg",
             "whole chicken = Whole Chicken|Chicken Thighs|Chicken Drumsticks|Chicken Wings|Chicken Legs; "
             "Free Range|Corn-Fed|Skin-On|Roasting|Bone-In; 500g|1kg|1.8kg",
             "turkey & duck = Turkey Breast|Turkey Mince|Duck Breast|Whole Duck|Turkey Steaks; "
             "Free Range|Lean|Roasting|Marinated|Boneless; 400g|1kg|2kg",
         )),
         ("pork", (
             "bacon = Smoked Bacon|Streaky Bacon|Back Bacon|Pancetta|Bacon Lardons; "
             "Dry Cured|Thick Cut|Maple|Unsmoked|Beechwood; 200g|300g|500g",
             "sausages = Pork Sausages|Bratwurst|Chorizo Sausage|Hot Dogs|Chipolatas|Italian Sausages; "
             "Classic|Spicy|Herby|Smoked|Caramelised Onion; 6 pack|8 pack|400g",
             "pork chops = Pork Chops|Pork Loin|Pork Belly|Pork Ribs|Pork Tenderloin; "
             "Bone-In|Boneless|Thick Cut|Marinated|Outdoor Bred; 400g|600g|1kg",
         )),
         ("seafood", (
             "salmon = Salmon Fillets|Smoked Salmon|Salmon Steaks|Hot Smoked Salmon|Trout Fillets; "
             "Wild|Scottish|Skin-On|Boneless|Oak Roasted; 120g|240g|500g",
             "shrimp = King Prawns|Cooked Shrimp|Tiger Prawns|Prawn Skewers|Scallops; "
             "Raw|Ready to Eat|Jumbo|Peeled|Garlic; 150g|300g|500g",
             "white fish = Cod Fillets|Haddock Fillets|Sea Bass|Tilapia|Hake Fillets; "
             "Skinless|Boneless|Line Caught|Breaded|Lemon Pepper; 2 pack|400g|1kg",
         )),
     )),
    ("deli", True, "Bella|Tuscan|Casa|Mediterra|Old World|Villa|Artisan|Provence",
     "Deli|Kitchen|Gourmet|Table", (
         ("cured meats", (
             "salami = Milano Salami|Pepperoni|Chorizo Slices|Napoli Salami|Finocchiona; "
             "Sliced|Mild|Spicy|Wafer Thin|Aged; 70g|100g|200g",
             "sliced ham = Honey Roast Ham|Smoked Ham|Prosciutto|Serrano Ham|Black Forest Ham; "
             "Wafer Thin|Thick Sliced|Dry Cured|Deli|Carved; 90g|125g|400g",
             "sliced poultry = Sliced Turkey Breast|Sliced Chicken|Roast Chicken Slices|Smoked Turkey|"
             "Chicken Pastrami; Deli|Honey Glazed|Peppered|Thin Cut|Oven Baked; 100g|150g|300g",
         )),
         ("antipasti", (
             "olives = Kalamata Olives|Green Olives|Black Olives|Stuffed Olives|Castelvetrano Olives|"
             "Mixed Olives; Pitted|Marinated|Garlic & Herb|Chilli|Whole; 150g|250g|500g",
             "marinated vegetables = Sun-Dried Tomatoes|Roasted Peppers|Artichoke Hearts|Grilled Aubergine|"
             "Stuffed Peppers; Marinated|In Oil|Chargrilled|Garlic|Italian; 180g|280g|500g",
             "pickles = Dill Pickles|Gherkins|Pickled Onions|Jalapenos|Capers; "
             "Crunchy|Sweet|Sliced|Baby|Spicy; 200g|350g|700g",
         )),
         ("dips & spreads", (
             "hummus = Hummus|Red Pepper Hummus|Lemon Hummus|Caramelised Onion Hummus|Beetroot Hummus; "
             "Classic|Smooth|Extra Creamy|Reduced Fat|Chunky; 170g|300g|500g",
             "salsa = Tomato Salsa|Salsa Verde|Chunky Salsa|Mango Salsa|Pico de Gallo; "
             "Mild|Medium|Hot|Fresh|Roasted; 200g|300g|450g",
             "guacamole & dips = Guacamole|Tzatziki|Sour Cream & Chive Dip|Baba Ganoush|Onion Dip; "
             "Fresh|Chunky|Spicy|Classic|Smooth; 150g|200g|350g",
         )),
         ("prepared meals", (
             "sandwiches = Chicken Club Sandwich|Egg Mayo Sandwich|BLT Sandwich|Tuna Sweetcorn Sandwich|"
             "Ham & Cheese Sandwich; Classic|Deluxe|Wholemeal|Triple|Toasted; 1 each|2 pack",
             "ready salads = Pasta Salad|Potato Salad|Quinoa Salad|Couscous Salad|Chicken Caesar Salad; "
             "Classic|Mediterranean|Zesty|Creamy|Protein; 200g|300g|500g",
             "fresh soups = Tomato Soup|Chicken Soup|Minestrone|Butternut Squash Soup|Lentil Soup; "
             "Fresh|Hearty|Chunky|Smooth|Spiced; 400g|600g",
         )),
     )),
    ("pantry", True, "Homestead|Pantry|Bountiful|Maple Ridge|Nonna's|Harvest Moon|Silver Spoon|Good Earth",
     "Foods|Kitchen|Provisions|Company", (
         ("pasta & rice", (
             "dry pasta = Spaghetti|Penne|Fusilli|Rigatoni|Linguine|Farfalle|Macaroni; "
             "Durum Wheat|Wholewheat|Bronze Cut|Gluten-Free|Egg; 500g|1kg",
             "rice = Basmati Rice|Jasmine Rice|Arborio Rice|Long Grain Rice|Brown Rice|Wild Rice; "
             "Premium|Easy Cook|Microwave|Aged|Whole Grain; 250g|1kg|5kg",
             "noodles = Egg Noodles|Rice Noodles|Udon Noodles|Soba Noodles|Ramen Noodles; "
             "Fine|Medium|Wide|Instant|Wholewheat; 250g|300g|5 pack",
         )),
         ("sauces", (
             "pasta sauce = Marinara Sauce|Tomato & Basil Sauce|Arrabbiata Sauce|Bolognese Sauce|"
             "Alfredo Sauce|Vodka Sauce; Classic|Chunky|Roasted Garlic|Spicy|Slow Cooked; 350g|500g|680g",
             "pesto = Basil Pesto|Red Pesto|Wild Garlic Pesto|Sun-Dried Tomato Pesto|Vegan Pesto; "
             "Classic|Fresh|Genovese|Rich|Chunky; 135g|190g|300g",
             "cooking sauces = Tikka Masala Sauce|Korma Sauce|Sweet & Sour Sauce|Teriyaki Sauce|"
             "Thai Green Curry Sauce|Fajita Sauce; Mild|Medium|Hot|Authentic|Rich; 350g|500g",
         )),
         ("canned goods", (
             "canned tomatoes = Chopped Tomatoes|Whole Plum Tomatoes|Passata|Tomato Paste|Crushed Tomatoes; "
             "Italian|Rich|With Basil|With Garlic|Fine; 400g|700g|4 pack",
             "canned beans = Chickpeas|Kidney Beans|Black Beans|Baked Beans|Cannellini Beans|Lentils; "
             "In Water|Reduced Salt|In Tomato Sauce|Mixed|Premium; 400g|4 pack",
             "canned fish = Tuna Chunks|Sardines|Mackerel Fillets|Anchovies|Pink Salmon; "
             "In Olive Oil|In Spring Water|In Brine|Smoked|In Tomato Sauce; 120g|160g|4 pack",
         )),
         ("baking", (
             "flour = Plain Flour|Self-Raising Flour|Bread Flour|Wholemeal Flour|Almond Flour; "
             "Fine|Strong|Stoneground|Unbleached|Extra Fine; 500g|1.5kg|3kg",
             "sugar & sweeteners = Caster Sugar|Brown Sugar|Icing Sugar|Granulated Sugar|Stevia Sweetener; "
             "Fine|Light|Dark|Golden|Pure; 500g|1kg|2kg",
             "baking mixes = Brownie Mix|Cake Mix|Cookie Mix|Bread Mix|Muffin Mix; "
             "Chocolate|Vanilla|Gluten-Free|Easy|Double Chocolate; 400g|500g",
         )),
         ("condiments", (
             "ketchup & mustard = Tomato Ketchup|Dijon Mustard|Yellow Mustard|Wholegrain Mustard|BBQ Sauce|"
             "Honey Mustard; Classic|Reduced Sugar|Smoky|Spicy|Squeezy; 250ml|500ml|1L",
             "mayonnaise = Mayonnaise|Garlic Mayonnaise|Aioli|Vegan Mayo|Chipotle Mayo; "
             "Real|Light|Squeezy|Extra Creamy|Egg-Free; 250ml|400ml|750ml",
             "salad dressing = Caesar Dressing|Balsamic Vinaigrette|Ranch Dressing|French Dressing|"
             "Honey Mustard Dressing; Classic|Light|Creamy|Zesty|Italian; 250ml|350ml|500ml",
         )),
         ("oils & vinegar", (
             "olive oil = Extra Virgin Olive Oil|Olive Oil|Light Olive Oil|Olive Oil Spray; "
             "Cold Pressed|Greek|Italian|Spanish|Mild; 500ml|750ml|1L",
             "cooking oil = Sunflower Oil|Vegetable Oil|Rapeseed Oil|Coconut Oil|Avocado Oil; "
             "Pure|Cold Pressed|Refined|Virgin|Light; 500ml|1L|2L",
             "vinegar = Balsamic Vinegar|Red Wine Vinegar|Apple Cider Vinegar|White Wine Vinegar|"
             "Rice Vinegar; Aged|Raw|Classic|Italian|Mild; 250ml|500ml",
         )),
     )),
    ("breakfast", True, "Morning|Sunrise|Early Bird|Golden Oat|Daybreak|Honey Hill|Prairie Sun|Bright Day",
     "Mills|Oats|Breakfast Co|Harvest", (
         ("cereal", (
             "cold cereal = Corn Flakes|Bran Flakes|Honey Hoops|Frosted Flakes|Rice Crisps|Chocolate Puffs|"
             "Wheat Biscuits; Crunchy|Whole Grain|Honey|Original|Reduced Sugar; 375g|500g|750g",
             "granola & muesli = Granola|Muesli|Fruit & Nut Muesli|Clusters|Nut Granola; "
             "Crunchy|Toasted|Honey|No Added Sugar|Berry; 400g|750g|1kg",
             "oatmeal = Porridge Oats|Rolled Oats|Steel Cut Oats|Instant Oatmeal|Oat Bran; "
             "Whole Grain|Golden Syrup|Apple Cinnamon|Original|Jumbo; 500g|1kg|10 sachets",
         )),
         ("spreads", (
             "peanut butter = Peanut Butter|Almond Butter|Cashew Butter|Hazelnut Spread|"
             "Sunflower Seed Butter; "
             "Smooth|Crunchy|No Added Sugar|Roasted|Natural; 340g|500g|1kg",
             "jam & preserves = Strawberry Jam|Raspberry Jam|Apricot Jam|Orange Marmalade|Blackcurrant Jam; "
             "Extra Fruit|Reduced Sugar|Seedless|Thick Cut|Classic; 340g|454g",
             "honey = Clover Honey|Manuka Honey|Wildflower Honey|Acacia Honey|Set Honey; "
             "Pure|Runny|Raw|Squeezy|Creamed; 250g|340g|500g",
         )),
         ("pancakes & syrup", (
             "pancake mix = Pancake Mix|Waffle Mix|Buttermilk Pancake Mix|Crepe Mix|Protein Pancake Mix; "
             "Classic|Fluffy|American Style|Gluten-Free|Shake & Pour; 300g|500g|1kg",
             "maple syrup = Maple Syrup|Golden Syrup|Agave Syrup|Chocolate Syrup|Caramel Syrup; "
             "Pure|Amber|Dark|Light|Grade A; 250ml|500ml",
             "breakfast bars = Cereal Bars|Oat Bars|Granola Bars|Protein Bars|Breakfast Biscuits; "
             "Chewy|Crunchy|Chocolate Chip|Fruit & Nut|Honey; 5 pack|6 pack|12 pack",
         )),
     )),
    ("snacks", True, "Crunch|Jolly|Zesty|Big Bite|Kettle|Munch|Happy Hour|Nibble",
     "Snacks|Bites|Treats|Snack Co", (
         ("chips", (
             "potato chips = Potato Chips|Kettle Chips|Crinkle Cut Chips|Lentil Chips|Veggie Chips; "
             "Sea Salt|Salt & Vinegar|Cheese & Onion|Barbecue|Sour Cream; 40g|150g|200g",
             "tortilla chips = Tortilla Chips|Corn Chips|Nachos|Blue Corn Tortilla Chips; "
             "Lightly Salted|Chilli|Lime|Cheese|Restaurant Style; 150g|200g|400g",
             "pretzels & popcorn = Pretzels|Pretzel Twists|Popcorn|Sweet & Salty Popcorn|Pretzel Sticks; "
             "Salted|Butter|Sweet|Sourdough|Toffee; 100g|175g|300g",
         )),
         ("crackers", (
             "water crackers = Water Crackers|Cream Crackers|Table Crackers|Cracker Thins|Oatcakes; "
             "Classic|Cracked Pepper|Sea Salt|Rosemary|Thin; 100g|150g|200g",
             "wholegrain crackers = Rye Crispbread|Wholegrain Crackers|Seeded Crackers|Spelt Crackers|"
             "Multigrain Crackers; Original|Toasted|Sesame|Light|Thin; 150g|200g|250g",
             "rice cakes = Rice Cakes|Corn Cakes|Rice Crackers|Lentil Cakes|Mini Rice Cakes; "
             "Lightly Salted|Chocolate|Sesame|Sweet Chilli|Plain; 100g|130g|200g",
         )),
         ("sweets", (
             "chocolate = Milk Chocolate Bar|Dark Chocolate Bar|White Chocolate Bar|Chocolate Buttons|"
             "Hazelnut Chocolate; Creamy|70% Cocoa|Salted Caramel|Orange|Mint; 45g|100g|200g",
             "candy = Gummy Bears|Fruit Chews|Sour Worms|Jelly Beans|Liquorice|Mints; "
             "Fruity|Sour|Sugar-Free|Mixed|Tropical; 100g|200g|400g",
             "biscuits = Digestive Biscuits|Chocolate Biscuits|Ginger Nuts|Sandwich Cookies|Butter Biscuits; "
             "Classic|Milk Chocolate|Dark Chocolate|Oaty|Crunchy; 200g|300g|400g",
         )),
         ("nuts & dried fruit", (
             "nuts = Mixed Nuts|Almonds|Cashews|Peanuts|Pistachios|Walnuts; "
             "Roasted|Salted|Unsalted|Honey Roasted|Smoked; 150g|200g|500g",
             "dried fruit = Raisins|Dried Apricots|Dried Mango|Dried Cranberries|Dates|Prunes; "
             "Sun-Dried|Soft|Unsweetened|Juicy|Pitted; 200g|250g|500g",
             "trail mix = Trail Mix|Student Mix|Seed Mix|Fruit & Nut Mix|Protein Mix; "
             "Classic|Tropical|Chocolate|Berry|Spicy; 150g|300g|500g",
         )),
     )),
    ("beverages", True, "Blue Spring|Brew|Clear Creek|Highland|Roast|Island|Fizz|Summit",
     "Beverages|Drinks|Brewing|Roasters", (
         ("coffee", (
             "ground coffee = Ground Coffee|Espresso Ground Coffee|Decaf Ground Coffee|Filter Coffee|"
             "Colombian Ground Coffee; Medium Roast|Dark Roast|Light Roast|Italian Roast|Fairtrade; "
             "227g|454g|1kg",
             "coffee pods = Espresso Pods|Lungo Pods|Cappuccino Pods|Decaf Pods|Latte Pods; "
             "Intense|Smooth|Classic|Rich|Mild; 10 pods|30 pods|50 pods",
             "coffee beans = Coffee Beans|Espresso Beans|Single Origin Beans|Decaf Beans; "
             "Medium Roast|Dark Roast|Light Roast|Ethiopian|Fairtrade; 250g|500g|1kg",
         )),
         ("tea", (
             "black tea = English Breakfast Tea|Earl Grey Tea|Assam Tea|Darjeeling Tea|Chai Tea; "
             "Classic|Decaf|Strong|Loose Leaf|Premium; 40 bags|80 bags|250g",
             "green tea = Green Tea|Jasmine Green Tea|Matcha|Sencha|Green Tea with Mint; "
             "Pure|Loose Leaf|Japanese|Lemon|Decaf; 20 bags|40 bags|100g",
             "herbal tea = Peppermint Tea|Chamomile Tea|Rooibos Tea|Ginger & Lemon Tea|Fruit Infusion; "
             "Calming|Pure|Caffeine-Free|Spiced|Fresh; 20 bags|40 bags|80 bags",
         )),
         ("soft drinks", (
             "cola = Cola|Diet Cola|Cherry Cola|Zero Sugar Cola|Vanilla Cola; "
             "Classic|Original|Caffeine-Free|Retro|Craft; 330ml can|1.5L|6x330ml",
             "sparkling water = Sparkling Water|Lemon Sparkling Water|Lime Sparkling Water|Mineral Water|"
             "Tonic Water; Natural|Flavoured|Unsweetened|Light|Premium; 500ml|1L|6x500ml",
             "lemonade & soda = Lemonade|Ginger Beer|Orange Soda|Root Beer|Cream Soda; "
             "Cloudy|Sparkling|Traditional|Light|Craft; 330ml can|1.5L|6x330ml",
         )),
         ("juice", (
             "orange juice = Orange Juice|Blood Orange Juice|Orange & Mango Juice|Grapefruit Juice|"
             "Tropical Juice; Smooth|With Bits|Freshly Squeezed|Not From Concentrate|Chilled; "
             "1L|1.75L|6x200ml",
             "apple juice = Apple Juice|Cloudy Apple Juice|Apple & Mango Juice|Cranberry Juice|Grape Juice; "
             "Pressed|Clear|Chilled|Not From Concentrate|No Added Sugar; 1L|1.5L|6x200ml",
             "smoothies = Strawberry Banana Smoothie|Mango Smoothie|Green Smoothie|Berry Smoothie|"
             "Protein Shake; Fresh|Thick|Blended|Cold Pressed|Vitamin; 250ml|750ml",
         )),
     )),
    ("frozen", True, "Polar|Arctic|Frosty|Glacier|Snowpeak|Iceberg|Winter|Northern Star",
     "Foods|Kitchen|Freeze|Creations", (
         ("frozen meals", (
             "frozen pizza = Margherita Pizza|Pepperoni Pizza|Four Cheese Pizza|Veggie Pizza|"
             "BBQ Chicken Pizza|Hawaiian Pizza; Stone Baked|Thin Crust|Deep Pan|Wood Fired|Stuffed Crust; "
             "350g|450g|2 pack",
             "frozen dinners = Lasagne|Chicken Curry|Macaroni Cheese|Cottage Pie|Beef Stir Fry|"
             "Chicken Tikka; "
             "Classic|Family|Single Serve|Hearty|Light; 400g|800g|1.2kg",
             "frozen snacks = Chicken Nuggets|Fish Fingers|Spring Rolls|Mozzarella Sticks|Onion Rings; "
             "Crispy|Breaded|Mini|Battered|Golden; 300g|500g|1kg",
         )),
         ("frozen vegetables", (
             "frozen peas & corn = Garden Peas|Sweetcorn|Petits Pois|Edamame|Mixed Vegetables; "
             "Sweet|Steam Fresh|Baby|Supersweet|Frozen; 500g|1kg|2kg",
             "frozen fries = French Fries|Sweet Potato Fries|Potato Wedges|Hash Browns|Roast Potatoes; "
             "Crinkle Cut|Chunky|Skin-On|Crispy|Seasoned; 750g|1kg|1.5kg",
             "frozen fruit = Frozen Berries|Frozen Mango|Frozen Strawberries|Frozen Cherries|Smoothie Mix; "
             "Mixed|Chunks|Whole|Tropical|Sliced; 350g|500g|1kg",
         )),
         ("ice cream", (
             "ice cream tubs = Vanilla Ice Cream|Chocolate Ice Cream|Cookie Dough Ice Cream|"
             "Strawberry Ice Cream|Salted Caramel Ice Cream|Mint Choc Chip Ice Cream; "
             "Premium|Dairy-Free|Light|Double|Luxury; 500ml|900ml|2L",
             "ice lollies = Ice Lollies|Fruit Bars|Choc Ices|Ice Cream Cones|Ice Cream Sandwiches; "
             "Tropical|Mini|Classic|Fruity|Double Chocolate; 4 pack|6 pack|10 pack",
             "frozen desserts = Cheesecake|Frozen Yogurt|Sorbet|Gelato|Profiteroles; "
             "Berry|Lemon|Chocolate|Vanilla|Raspberry; 300g|500ml|1L",
         )),
     )),
    ("household", False, "Sparkle|Pure|Fresh Home|Bright|Clean|Eco|Soft|Daisy",
     "Home|Care|Living|Works", (
         ("cleaning", (
             "dish soap = Washing Up Liquid|Dishwasher Tablets|Dishwasher Rinse Aid|Dish Sponges; "
             "Lemon|Original|Sensitive|Ultra|Lime; 450ml|900ml|30 pack",
             "laundry = Laundry Detergent|Laundry Pods|Fabric Softener|Stain Remover|Laundry Powder; "
             "Fresh|Non-Bio|Bio|Sensitive|Lavender; 1L|2L|30 washes",
             "surface cleaner = All-Purpose Cleaner|Glass Cleaner|Bathroom Cleaner|Kitchen Spray|"
             "Disinfectant Wipes; Citrus|Original|Antibacterial|Fresh|Unscented; 500ml|750ml|80 wipes",
         )),
         ("paper goods", (
             "paper towels = Kitchen Roll|Paper Towels|Napkins|Table Napkins; "
             "Absorbent|Extra Strong|Recycled|Select-a-Size|Quilted; 2 rolls|6 rolls|100 pack",
             "toilet paper = Toilet Tissue|Toilet Paper|Moist Toilet Tissue; "
             "Soft|Quilted|Recycled|Ultra Soft|3-Ply; 4 rolls|9 rolls|24 rolls",
             "tissues = Facial Tissues|Pocket Tissues|Balsam Tissues|Cube Tissues; "
             "Soft|Extra Large|Aloe Vera|Family|Mansize; 1 box|3 boxes|10 pack",
         )),
         ("kitchen supplies", (
             "foil & wrap = Aluminium Foil|Cling Film|Baking Paper|Sandwich Bags|Freezer Bags; "
             "Heavy Duty|Standard|Non-Stick|Resealable|Extra Wide; 10m|30m|50 pack",
             "bin bags = Bin Bags|Pedal Bin Liners|Recycling Sacks|Compostable Bags; "
             "Heavy Duty|Drawstring|Scented|Tie Handle|Large; 10 pack|20 pack|40 pack",
             "light bulbs = LED Bulbs|Halogen Bulbs|Spotlight Bulbs|Candle Bulbs; "
             "Warm White|Daylight|Dimmable|Energy Saving|Cool White; 1 pack|2 pack|4 pack",
         )),
     )),
)

# Planted complement rules: (trigger leaf, complement leaf, chance that a bought trigger pulls the
# complement into the same basket, added right after it).
_COMPLEMENTS = (
    ("hard cheese", "olives", 0.45), ("hard cheese", "water crackers", 0.45),
    ("soft cheese", "water crackers", 0.4), ("soft cheese", "grapes & melons", 0.3),
    ("dry pasta", "pasta sauce", 0.6), ("dry pasta", "hard cheese", 0.35),
    ("cold cereal", "milk", 0.6),
    ("granola & muesli", "greek yogurt", 0.5), ("granola & muesli", "berries", 0.35),
    ("tortilla chips", "salsa", 0.55), ("tortilla chips", "guacamole & dips", 0.35),
    ("ground beef", "burger buns", 0.5), ("ground beef", "sliced cheese", 0.35),
    ("sausages", "hot dog buns", 0.5), ("sausages", "ketchup & mustard", 0.35),
    ("frozen pizza", "cola", 0.4),
    ("ground coffee", "cream", 0.45), ("coffee pods", "milk", 0.35),
    ("pancake mix", "maple syrup", 0.6), ("pancake mix", "berries", 0.3),
    ("sliced bread", "butter", 0.4), ("sliced bread", "jam & preserves", 0.3),
    ("peanut butter", "jam & preserves", 0.45),
    ("salmon", "citrus", 0.45), ("salmon", "fresh herbs", 0.35),
    ("bacon", "eggs", 0.5),
    ("hummus", "wraps & flatbreads", 0.45),
    ("steaks", "root vegetables", 0.4),
    ("rice", "cooking sauces", 0.5),
    ("salami", "olives", 0.3), ("salami", "artisan bread", 0.35),
    ("leafy greens", "salad dressing", 0.45),
    ("black tea", "biscuits", 0.4),
    ("potato chips", "lemonade & soda", 0.3),
    ("croissants", "ground coffee", 0.3),
    ("frozen fries", "ketchup & mustard", 0.4), ("sandwiches", "potato chips", 0.4),
    ("chicken breast", "rice", 0.3), ("noodles", "cooking sauces", 0.35),
    ("white fish", "citrus", 0.35), ("shrimp", "citrus", 0.35),
    ("oatmeal", "honey", 0.35), ("oatmeal", "bananas", 0.3), ("herbal tea", "honey", 0.35),
    ("canned tomatoes", "dry pasta", 0.35), ("flour", "sugar & sweeteners", 0.45),
    ("baking mixes", "eggs", 0.4),
    ("whole chicken", "root vegetables", 0.4), ("pork chops", "apples & pears", 0.3),
    ("tomatoes & peppers", "olive oil", 0.3), ("cakes", "cream", 0.3), ("dish soap", "paper towels", 0.3),
)

# Retailer display names, in id order; more retailers than names get numbered names.
_RETAILER_NAMES = ("FreshWay", "Harbor Market", "ValuMart", "Greenleaf Grocer", "City Pantry",
                   "Corner Basket", "Northgate Foods", "Sunfield Market")


@dataclass(frozen=True)
class Leaf:
    """A leaf category: where it sits, and the words its products are named with."""

    name: str
    aisle: int  # index into Taxonomy.aisles
    department: int  # index into Taxonomy.departments
    nouns: tuple[str, ...]
    modifiers: tuple[str, ...]
    sizes: tuple[str, ...]


@dataclass(frozen=True)
class Department:
    """A top-level department and the word pools its brand names are made of."""

    name: str
    organic_ok: bool  # whether its products come in organic variants
    brand_first: tuple[str, ...]
    brand_second: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    """The three-level category tree: departments, aisles (with their department) and leaves."""

    departments: tuple[Department, ...]
    aisles: tuple[tuple[str, int], ...]  # (name, department index)
    leaves: tuple[Leaf, ...]

    def path(self, leaf: int) -> list[str]:
        """Root-to-leaf category path of leaf ``leaf``: [department, aisle, leaf]."""
        lf = self.leaves[leaf]
        return [self.departments[lf.department].name, self.aisles[lf.aisle][0], lf.name]

    def leaf_index(self, name: str) -> int:
        """Index of the leaf called ``name`` (leaf names are unique)."""
        for i, lf in enumerate(self.leaves):
            if lf.name == name:
                return i
        raise KeyError(f"no leaf category named {name!r}")


def _split(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split("|") if w.strip())


def _parse_leaf(spec: str, aisle: int, department: int) -> Leaf:
    name, rest = (s.strip() for s in spec.split("=", 1))
    nouns, modifiers, sizes = (_split(part) for part in rest.split(";"))
    return Leaf(name, aisle, department, nouns, modifiers, sizes)


def grocery_taxonomy() -> Taxonomy:
    """Parse the hand-written vocabulary into a Taxonomy (11 departments, 43 aisles, 129 leaves)."""
    departments, aisles, leaves = [], [], []
    for d, (dname, organic_ok, first, second, dept_aisles) in enumerate(_DEPARTMENTS):
        departments.append(Department(dname, organic_ok, _split(first), _split(second)))
        for aname, specs in dept_aisles:
            aisles.append((aname, d))
            leaves.extend(_parse_leaf(spec, len(aisles) - 1, d) for spec in specs)
    return Taxonomy(tuple(departments), tuple(aisles), tuple(leaves))


def complement_rules() -> tuple[tuple[str, str, float], ...]:
    """The planted complement rules as (trigger leaf, complement leaf, probability)."""
    return _COMPLEMENTS


def retailer_name(retailer: int) -> str:
    """Display name of retailer ``retailer`` (0-based)."""
    if retailer < len(_RETAILER_NAMES):
        return _RETAILER_NAMES[retailer]
    return f"Market {retailer + 1}"
