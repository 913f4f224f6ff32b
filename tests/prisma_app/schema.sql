-- The tables of schema.prisma, with the Venzory constraint names (what the exporter's
-- config lists as expected constraints). Idempotent: the test drops and recreates them.
DROP TABLE IF EXISTS "LocationInventory", "Item", "Location", "Practice" CASCADE;

CREATE TABLE "Practice" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "slug" TEXT NOT NULL,
    CONSTRAINT "Practice_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "Practice_slug_key" ON "Practice"("slug");

CREATE TABLE "Location" (
    "id" TEXT NOT NULL,
    "practiceId" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "code" TEXT,
    "description" TEXT NOT NULL,
    CONSTRAINT "Location_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "Location_practiceId_fkey" FOREIGN KEY ("practiceId") REFERENCES "Practice"("id")
        ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "Location_practiceId_code_key" ON "Location"("practiceId", "code")
    WHERE "code" IS NOT NULL;

CREATE TABLE "Item" (
    "id" TEXT NOT NULL,
    "practiceId" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "sku" TEXT,
    CONSTRAINT "Item_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "Item_practiceId_fkey" FOREIGN KEY ("practiceId") REFERENCES "Practice"("id")
        ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "Item_practiceId_name_key" ON "Item"("practiceId", "name");

CREATE TABLE "LocationInventory" (
    "locationId" TEXT NOT NULL,
    "itemId" TEXT NOT NULL,
    "quantity" INTEGER NOT NULL,
    "reorderPoint" INTEGER,
    CONSTRAINT "LocationInventory_pkey" PRIMARY KEY ("locationId", "itemId"),
    CONSTRAINT "LocationInventory_locationId_fkey" FOREIGN KEY ("locationId")
        REFERENCES "Location"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    CONSTRAINT "LocationInventory_itemId_fkey" FOREIGN KEY ("itemId")
        REFERENCES "Item"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    CONSTRAINT "check_quantity_non_negative" CHECK ("quantity" >= 0),
    CONSTRAINT "check_reorder_point_non_negative" CHECK ("reorderPoint" IS NULL OR "reorderPoint" >= 0)
);
