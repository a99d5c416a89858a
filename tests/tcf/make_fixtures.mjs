// Builds fixtures.json: TC strings encoded by the IAB Tech Lab's reference encoder
// (@iabtechlabtcf/core, pinned in package.json), with what each one encodes.
// Run: cd tests/tcf && npm ci && node make_fixtures.mjs
// The tests read fixtures.json only; they never run this script.
import { writeFileSync } from "node:fs";
import {
  GVL,
  PurposeRestriction,
  RestrictionType,
  Segment,
  TCModel,
  TCString,
} from "@iabtechlabtcf/core";

const VENDOR = 755; // the vendor the tests' policy names ([tcf] vendor_id = 755)
const OTHER = 42; // another vendor, whose restrictions must not touch 755
const NEIGHBOURS = [750, 751, 752, 753, 754, 756, 757, 758, 759, 760]; // for a range

// A minimal vendor list, built here (the encoder needs one to drop vendor signals a vendor
// cannot have, and to accept a restriction). Each vendor declares purposes 1, 7 and 8 for
// consent and 7 and 8 for legitimate interest, all flexible, so that the encoder accepts
// every restriction type on them; purpose 1 stays consent only, as TCF 2.2 requires.
function vendor(id) {
  return {
    id,
    name: `Vendor ${id}`,
    purposes: [1, 7, 8],
    legIntPurposes: [7, 8],
    flexiblePurposes: [1, 7, 8],
    specialPurposes: [],
    features: [],
    specialFeatures: [],
    policyUrl: `https://vendor-${id}.example/privacy`,
  };
}
const named = (ids) => Object.fromEntries(ids.map((id) => [id, { id, name: `Purpose ${id}` }]));
const gvl = new GVL({
  gvlSpecificationVersion: 3,
  vendorListVersion: 150,
  tcfPolicyVersion: 5,
  lastUpdated: "2025-06-01T00:00:00Z",
  purposes: named([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
  specialPurposes: named([1, 2, 3]),
  features: named([1, 2, 3]),
  specialFeatures: named([1, 2]),
  stacks: {},
  dataCategories: {},
  vendors: Object.fromEntries(
    [OTHER, VENDOR, ...NEIGHBOURS].map((id) => [id, vendor(id)]),
  ),
});

const TYPES = {
  not_allowed: RestrictionType.NOT_ALLOWED,
  require_consent: RestrictionType.REQUIRE_CONSENT,
  require_li: RestrictionType.REQUIRE_LI,
};

function build(spec) {
  const tc = new TCModel(gvl);
  tc.cmpId = 300;
  tc.cmpVersion = 7;
  tc.consentScreen = 3;
  tc.consentLanguage = "FR";
  tc.publisherCountryCode = "FR";
  tc.isServiceSpecific = true;
  tc.created = new Date(Date.UTC(2025, 5, 3));
  tc.lastUpdated = new Date(Date.UTC(2025, 5, 3));
  tc.purposeConsents.set(spec.purposes_consent ?? []);
  tc.purposeLegitimateInterests.set(spec.purposes_li ?? []);
  tc.vendorConsents.set(spec.vendor_consents ?? []);
  tc.vendorLegitimateInterests.set(spec.vendor_li ?? []);
  for (const r of spec.restrictions ?? []) {
    for (const id of r.vendors) {
      tc.publisherRestrictions.add(id, new PurposeRestriction(r.purpose, TYPES[r.type]));
    }
  }
  const segments = [Segment.CORE, Segment.VENDORS_DISCLOSED];
  if (spec.publisher) {
    tc.publisherConsents.set(spec.publisher.purposes_consent ?? []);
    tc.publisherLegitimateInterests.set(spec.publisher.purposes_li ?? []);
    segments.push(Segment.PUBLISHER_TC);
  }
  tc.vendorsDisclosed.set([OTHER, VENDOR]);
  const text = TCString.encode(tc, { segments });
  // What the string carries, read back by the same library: the encoder drops signals a
  // vendor cannot have, so the spec above is not always what was written.
  const back = TCString.decode(text);
  const ids = (vector) => {
    const out = [];
    vector.forEach((set, id) => set && out.push(id));
    return out;
  };
  const restrictions = [];
  for (const hash of back.publisherRestrictions.map.keys()) {
    const r = PurposeRestriction.unHash(hash);
    const type = Object.keys(TYPES).find((k) => TYPES[k] === r.restrictionType);
    const vendors = back.publisherRestrictions.getVendors(r);
    restrictions.push({ purpose: r.purposeId, type, vendors });
  }
  return {
    name: spec.name,
    about: spec.about,
    tc_string: text,
    encodes: {
      purposes_consent: ids(back.purposeConsents),
      purposes_li: ids(back.purposeLegitimateInterests),
      vendor_consents: ids(back.vendorConsents),
      vendor_li: ids(back.vendorLegitimateInterests),
      restrictions,
      publisher: spec.publisher
        ? {
            purposes_consent: ids(back.publisherConsents),
            purposes_li: ids(back.publisherLegitimateInterests),
          }
        : null,
    },
  };
}

const ALL = [1, 7, 8];
const SPECS = [
  { name: "core_only", about: "core 1,7,8 and vendor 755's consent; no Publisher TC segment",
    purposes_consent: ALL, vendor_consents: [VENDOR] },
  { name: "publisher_empty", about: "as core_only, with an empty Publisher TC segment",
    purposes_consent: ALL, vendor_consents: [VENDOR], publisher: {} },
  { name: "publisher_only", about: "no core purposes; the publisher's consent for 1,7,8",
    publisher: { purposes_consent: ALL } },
  { name: "both_agree", about: "core 1,7,8 with vendor 755; publisher 1,7,8",
    purposes_consent: ALL, vendor_consents: [VENDOR], publisher: { purposes_consent: ALL } },
  { name: "publisher_partial", about: "core 1,7,8 with vendor 755; publisher 1,8 only",
    purposes_consent: ALL, vendor_consents: [VENDOR], publisher: { purposes_consent: [1, 8] } },
  { name: "no_vendor_consent", about: "core 1,7,8, no vendor consent; publisher 1,7,8",
    purposes_consent: ALL, publisher: { purposes_consent: ALL } },
  { name: "other_vendor_consent", about: "core 1,7,8 with vendor 42 only; no publisher segment",
    purposes_consent: ALL, vendor_consents: [OTHER] },
  { name: "not_allowed_p1_755", about: "as both_agree; purpose 1 NOT_ALLOWED for 755",
    purposes_consent: ALL, vendor_consents: [VENDOR], publisher: { purposes_consent: ALL },
    restrictions: [{ purpose: 1, type: "not_allowed", vendors: [VENDOR] }] },
  { name: "not_allowed_p7_755", about: "as core_only; purpose 7 NOT_ALLOWED for 755",
    purposes_consent: ALL, vendor_consents: [VENDOR],
    restrictions: [{ purpose: 7, type: "not_allowed", vendors: [VENDOR] }] },
  { name: "not_allowed_p1_other", about: "as core_only with 42 too; purpose 1 NOT_ALLOWED for 42",
    purposes_consent: ALL, vendor_consents: [VENDOR, OTHER],
    restrictions: [{ purpose: 1, type: "not_allowed", vendors: [OTHER] }] },
  { name: "not_allowed_p8_range", about: "as core_only; purpose 8 NOT_ALLOWED for 750-760",
    purposes_consent: ALL, vendor_consents: [VENDOR],
    restrictions: [{ purpose: 8, type: "not_allowed", vendors: [VENDOR, ...NEIGHBOURS] }] },
  { name: "require_consent_p8_given", about: "as core_only; purpose 8 REQUIRE_CONSENT for 755",
    purposes_consent: ALL, vendor_consents: [VENDOR],
    restrictions: [{ purpose: 8, type: "require_consent", vendors: [VENDOR] }] },
  { name: "require_consent_p8_li_only",
    about: "core consent 1,7, LI 7,8, 755 consent and LI; purpose 8 REQUIRE_CONSENT for 755",
    purposes_consent: [1, 7], purposes_li: [7, 8], vendor_consents: [VENDOR], vendor_li: [VENDOR],
    restrictions: [{ purpose: 8, type: "require_consent", vendors: [VENDOR] }] },
  { name: "require_consent_p8_other",
    about: "core consent 1,7,8, 755 and 42; purpose 8 REQUIRE_CONSENT for 42",
    purposes_consent: ALL, vendor_consents: [VENDOR, OTHER],
    restrictions: [{ purpose: 8, type: "require_consent", vendors: [OTHER] }] },
  { name: "require_li_p8_given",
    about: "core consent 1,7, LI 8, 755 consent and LI; purpose 8 REQUIRE_LI for 755",
    purposes_consent: [1, 7], purposes_li: [8], vendor_consents: [VENDOR], vendor_li: [VENDOR],
    restrictions: [{ purpose: 8, type: "require_li", vendors: [VENDOR] }] },
  { name: "require_li_p8_no_li",
    about: "core consent 1,7,8, no LI, 755 consent; purpose 8 REQUIRE_LI for 755",
    purposes_consent: ALL, vendor_consents: [VENDOR],
    restrictions: [{ purpose: 8, type: "require_li", vendors: [VENDOR] }] },
  { name: "require_li_p8_no_vendor_li",
    about: "core consent 1,7, LI 8, 755 consent only; purpose 8 REQUIRE_LI for 755",
    purposes_consent: [1, 7], purposes_li: [8], vendor_consents: [VENDOR],
    restrictions: [{ purpose: 8, type: "require_li", vendors: [VENDOR] }] },
  { name: "require_li_p1",
    about: "core consent 1,7,8, 755 consent and LI; purpose 1 REQUIRE_LI for 755",
    purposes_consent: ALL, vendor_consents: [VENDOR], vendor_li: [VENDOR],
    restrictions: [{ purpose: 1, type: "require_li", vendors: [VENDOR] }] },
  { name: "require_li_p8_other",
    about: "core consent 1,7, LI 8, 755 and 42 consent and LI; purpose 8 REQUIRE_LI for 42",
    purposes_consent: [1, 7], purposes_li: [8], vendor_consents: [VENDOR, OTHER],
    vendor_li: [VENDOR, OTHER],
    restrictions: [{ purpose: 8, type: "require_li", vendors: [OTHER] }] },
];

const fixtures = {
  generator: "@iabtechlabtcf/core " + JSON.parse(
    await import("node:fs").then((fs) =>
      fs.readFileSync(new URL("./node_modules/@iabtechlabtcf/core/package.json", import.meta.url)),
    ),
  ).version,
  vendor_id: VENDOR,
  strings: SPECS.map(build),
};
writeFileSync(new URL("./fixtures.json", import.meta.url), JSON.stringify(fixtures, null, 2) + "\n");
console.log(`wrote ${fixtures.strings.length} TC strings`);
