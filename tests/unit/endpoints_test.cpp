// The endpoint snapshot (handler/endpoints.h): lookups, the current-token
// rule, and the copy-on-write merge an incremental reload
// (handler/endpoint_loader.cpp) makes. What it hands the merge is one changed
// endpoint's entries; everything else must be the old snapshot's, shared.
#include "endpoints.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace ipayout {
namespace {

EndpointMap::Entry entry(int64_t id, std::string url, int64_t token_until = 0) {
  Endpoint e;
  e.id = id;
  e.name = "ep" + std::to_string(id);
  e.key = "pk_" + std::to_string(id);
  e.hmac = std::make_shared<const crypto::LazyHmacKey>(e.key);
  e.notification_url = std::move(url);
  e.token_until = token_until;
  return std::make_shared<const Endpoint>(std::move(e));
}

std::string hash(const std::string& token) {
  return token_hash(token);
}

size_t shard(const std::string& token) {
  return EndpointMap::shard_of(hash(token));
}

class MergeTest : public ::testing::Test {
 protected:
  MergeTest() {
    for (int64_t id = 1; id <= 1000; ++id) {
      std::string t = "t" + std::to_string(id);
      old_.put(hash(t), entry(id, "https://x/" + std::to_string(id)));
    }
    // Endpoint 7 is in a token rotation: its previous token still delivers.
    old_.put(hash("t7-old"), entry(7, "https://x/7-old", 1000));
  }

  // Every entry of `merged` but those of `ids` is the same object as in old_.
  void expect_shared_but(const EndpointMap& merged, std::set<int64_t> ids) {
    old_.for_each([&](const std::string& h, const EndpointMap::Entry& e) {
      if (ids.count(e->id)) return;
      EXPECT_EQ(merged.find(h), e.get()) << e->id;
    });
  }

  EndpointMap old_;
};

TEST_F(MergeTest, FindIsByTokenHash) {
  ASSERT_EQ(old_.size(), 1001u);
  ASSERT_NE(old_.find(hash("t5")), nullptr);
  EXPECT_EQ(old_.find(hash("t5"))->id, 5);
  EXPECT_EQ(old_.find(hash("t7-old"))->token_until, 1000);
  EXPECT_EQ(old_.find(hash("never")), nullptr);
  EXPECT_EQ(old_.find(""), nullptr);
}

TEST_F(MergeTest, AChangeCopiesOnlyTheShardsOfItsEntries) {
  auto merged =
      merge_endpoints(old_, {{5, {{hash("t5"), entry(5, "https://x/5-new")}}, {shard("t5")}}});
  ASSERT_EQ(merged->size(), old_.size());
  expect_shared_but(*merged, {5});
  EXPECT_EQ(merged->find(hash("t5"))->notification_url, "https://x/5-new");
  EXPECT_EQ(old_.find(hash("t5"))->notification_url, "https://x/5");  // the old snapshot holds
  for (size_t s = 0; s < EndpointMap::kShards; ++s) {
    if (s == shard("t5")) {
      EXPECT_NE(&merged->shard(s), &old_.shard(s));
    } else {
      EXPECT_EQ(&merged->shard(s), &old_.shard(s)) << s;  // not copied
    }
  }
}

TEST_F(MergeTest, ARotatedTokenReplacesBothEntriesOfTheEndpoint) {
  // rotate-token again: a new current token, the old current one is now the previous.
  auto merged = merge_endpoints(old_, {{7,
                                        {{hash("t7"), entry(7, "https://x/7", 2000)},
                                         {hash("t7-new"), entry(7, "https://x/7-new")}},
                                        {shard("t7"), shard("t7-old")}}});
  EXPECT_EQ(merged->find(hash("t7-old")), nullptr);  // the first token's grace is over
  EXPECT_EQ(merged->find(hash("t7"))->token_until, 2000);
  EXPECT_EQ(merged->find(hash("t7-new"))->token_until, 0);
  EXPECT_EQ(merged->size(), old_.size());
  expect_shared_but(*merged, {7});
  EXPECT_NE(old_.find(hash("t7-old")), nullptr);
}

TEST_F(MergeTest, ADisabledOrDeletedEndpointLosesEveryEntry) {
  auto merged =
      merge_endpoints(old_, {{7, {}, {shard("t7"), shard("t7-old")}}, {9, {}, {shard("t9")}}});
  EXPECT_EQ(merged->find(hash("t7")), nullptr);
  EXPECT_EQ(merged->find(hash("t7-old")), nullptr);
  EXPECT_EQ(merged->find(hash("t9")), nullptr);
  EXPECT_EQ(merged->size(), old_.size() - 3);
  expect_shared_but(*merged, {7, 9});
  EXPECT_EQ(old_.size(), 1001u);
}

TEST_F(MergeTest, ANewEndpointIsAdded) {
  auto merged =
      merge_endpoints(old_, {{1001, {{hash("t1001"), entry(1001, "https://x/1001")}}, {}}});
  EXPECT_EQ(merged->find(hash("t1001"))->id, 1001);
  EXPECT_EQ(old_.find(hash("t1001")), nullptr);
  EXPECT_EQ(merged->size(), old_.size() + 1);
  expect_shared_but(*merged, {});
}

TEST_F(MergeTest, MergesOfMergesLeaveEveryEarlierSnapshotAsItWas) {
  auto one =
      merge_endpoints(old_, {{5, {{hash("t5"), entry(5, "https://x/5-one")}}, {shard("t5")}}});
  auto two = merge_endpoints(*one, {{5, {{hash("t5"), entry(5, "https://x/5-two")}}, {shard("t5")}},
                                    {6, {}, {shard("t6")}}});
  EXPECT_EQ(old_.find(hash("t5"))->notification_url, "https://x/5");
  EXPECT_EQ(one->find(hash("t5"))->notification_url, "https://x/5-one");
  EXPECT_EQ(two->find(hash("t5"))->notification_url, "https://x/5-two");
  EXPECT_NE(one->find(hash("t6")), nullptr);
  EXPECT_EQ(two->find(hash("t6")), nullptr);
  EXPECT_EQ(two->size(), old_.size() - 1);
}

TEST_F(MergeTest, NoChangesIsTheSameMap) {
  auto merged = merge_endpoints(old_, {});
  ASSERT_EQ(merged->size(), old_.size());
  expect_shared_but(*merged, {});
}

TEST(EndpointMapPut, ACurrentTokenWinsOverAnotherEndpointsPreviousOne) {
  // Unique per column only: one endpoint's previous token may be another's
  // current one. Which came first must not decide.
  for (bool current_first : {true, false}) {
    EndpointMap m;
    auto current = entry(1, "https://x/1"), previous = entry(2, "https://x/2-old", 1000);
    if (current_first) {
      m.put(hash("t"), current);
      m.put(hash("t"), previous);
    } else {
      m.put(hash("t"), previous);
      m.put(hash("t"), current);
    }
    EXPECT_EQ(m.find(hash("t"))->id, 1) << current_first;
    EXPECT_EQ(m.size(), 1u);
  }
}

}  // namespace
}  // namespace ipayout
