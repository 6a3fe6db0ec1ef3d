// The endpoint snapshot's copy-on-write merge (handler/endpoints.cpp): what an
// incremental reload (handler/endpoint_loader.cpp) hands it is one changed
// endpoint's entries; everything else must be the old snapshot's, shared.
#include "endpoints.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace ipayout {
namespace {

std::shared_ptr<const Endpoint> entry(int64_t id, std::string url, int64_t token_until = 0) {
  Endpoint e;
  e.id = id;
  e.name = "ep" + std::to_string(id);
  e.key = "pk_" + std::to_string(id);
  e.hmac = std::make_shared<const crypto::LazyHmacKey>(e.key);
  e.notification_url = std::move(url);
  e.token_until = token_until;
  return std::make_shared<const Endpoint>(std::move(e));
}

std::string hash(std::string_view token) {
  return token_hash(token);
}

class MergeTest : public ::testing::Test {
 protected:
  MergeTest() {
    for (int64_t id = 1; id <= 100; ++id) {
      put_endpoint(old_, hash("t" + std::to_string(id)),
                   entry(id, "https://x/" + std::to_string(id)));
    }
    // Endpoint 7 is in a token rotation: its previous token still delivers.
    put_endpoint(old_, hash("t7-old"), entry(7, "https://x/7-old", 1000));
  }

  EndpointMap old_;
};

TEST_F(MergeTest, UnchangedEntriesAreSharedNotCopied) {
  auto merged = merge_endpoints(old_, {{5, {{hash("t5"), entry(5, "https://x/5-new")}}}});
  ASSERT_EQ(merged->size(), old_.size());
  for (const auto& [h, e] : old_) {
    if (e->id == 5) continue;
    EXPECT_EQ(merged->at(h).get(), e.get()) << e->id;  // the same object
  }
  EXPECT_EQ(merged->at(hash("t5"))->notification_url, "https://x/5-new");
  EXPECT_EQ(old_.at(hash("t5"))->notification_url, "https://x/5");  // the old snapshot holds
}

TEST_F(MergeTest, ARotatedTokenReplacesBothEntriesOfTheEndpoint) {
  // rotate-token again: a new current token, the old current one is now the previous.
  auto merged = merge_endpoints(old_, {{7,
                                        {{hash("t7"), entry(7, "https://x/7", 2000)},
                                         {hash("t7-new"), entry(7, "https://x/7-new")}}}});
  EXPECT_EQ(merged->count(hash("t7-old")), 0u);  // the first token's grace is over
  EXPECT_EQ(merged->at(hash("t7"))->token_until, 2000);
  EXPECT_EQ(merged->at(hash("t7-new"))->token_until, 0);
  EXPECT_EQ(merged->size(), old_.size());
}

TEST_F(MergeTest, ADisabledOrDeletedEndpointLosesEveryEntry) {
  auto merged = merge_endpoints(old_, {{7, {}}, {9, {}}});
  EXPECT_EQ(merged->count(hash("t7")), 0u);
  EXPECT_EQ(merged->count(hash("t7-old")), 0u);
  EXPECT_EQ(merged->count(hash("t9")), 0u);
  EXPECT_EQ(merged->size(), old_.size() - 3);
}

TEST_F(MergeTest, ANewEndpointIsAdded) {
  auto merged = merge_endpoints(old_, {{101, {{hash("t101"), entry(101, "https://x/101")}}}});
  EXPECT_EQ(merged->at(hash("t101"))->id, 101);
  EXPECT_EQ(merged->size(), old_.size() + 1);
}

TEST_F(MergeTest, NoChangesIsTheSameMap) {
  auto merged = merge_endpoints(old_, {});
  ASSERT_EQ(merged->size(), old_.size());
  for (const auto& [h, e] : old_) EXPECT_EQ(merged->at(h).get(), e.get());
}

TEST(PutEndpoint, ACurrentTokenWinsOverAnotherEndpointsPreviousOne) {
  // Unique per column only: one endpoint's previous token may be another's
  // current one. Which came first must not decide.
  for (bool current_first : {true, false}) {
    EndpointMap m;
    auto current = entry(1, "https://x/1"), previous = entry(2, "https://x/2-old", 1000);
    if (current_first) {
      put_endpoint(m, hash("t"), current);
      put_endpoint(m, hash("t"), previous);
    } else {
      put_endpoint(m, hash("t"), previous);
      put_endpoint(m, hash("t"), current);
    }
    EXPECT_EQ(m.at(hash("t"))->id, 1) << current_first;
  }
}

}  // namespace
}  // namespace ipayout
